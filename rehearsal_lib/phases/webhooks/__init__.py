"""The webhooks phase: `params` is its block under `phases.webhooks`, `checks` its check families."""

from rehearsal_lib.phases.spec import PhaseSpec
from rehearsal_lib.phases.webhooks.params import WebhooksParams

SPEC = PhaseSpec(
    name="webhooks",
    title="Webhook Processing",
    order=3,
    seed="Staging Rehearsal Report · 2. Webhook Processing Pipeline",
    params=WebhooksParams,
    default_params=None,
    notebook="03_webhooks.ipynb",
)
