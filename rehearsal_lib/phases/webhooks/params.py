"""Params of the webhooks phase: its block under `phases.webhooks` in params/<env>.yaml (docs/params.md)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from rehearsal_lib.params_base import (
    REF_RE,
    Cleanup,
    PhaseParams,
    Strict,
)


class SignatureScheme(Strict):
    """How a sender signs a webhook: HMAC-SHA256 of `signed_payload`, written into `header` as `format`."""

    header: str = Field("X-Signature", description="Header that carries the signature.")
    format: str = Field("{signature}", description="Header value; placeholders {signature}, {timestamp}, "
                        "e.g. 'sha256={signature}' or 't={timestamp},v1={signature}'.")
    signed_payload: str = Field("{body}", description="What is HMAC'd: '{body}' or e.g. '{timestamp}.{body}'.")
    encoding: Literal["hex", "base64"] = "hex"
    timestamp_header: str | None = Field(None, description="Header carrying the unix timestamp, if it travels apart.")

    @property
    def signs_timestamp(self) -> bool:
        return "{timestamp}" in self.signed_payload


class WebhookReplay(Strict):
    window_s: int = Field(300, gt=0, description="The receiver's replay window.")
    stale_by_s: int = Field(60, ge=1, description="How far outside the window the probe's timestamp is.")


class WebhookIdempotency(Strict):
    sql: str = Field(description="Returns one number: how many times :delivery_id was processed.")
    expected: int = Field(1, ge=0)
    duplicate_status: list[int] = Field(default_factory=lambda: [200, 201, 202, 204, 409],
                                        description="Acceptable answers to the second send.")


class WebhookRateLimit(Strict):
    count: int = Field(description="Requests allowed per window.", gt=0)
    window_s: float = Field(description="The limiter's window.", gt=0)
    max_requests: int = Field(50, gt=1, le=1000, description="Hard bound on requests the probe sends (> count).")
    status: int = 429
    headers: dict[str, str] = Field(default_factory=dict,
                                    description="Extra headers giving the probe its own bucket (e.g. a source).")
    cooldown_s: float = Field(0, ge=0, le=120, description="Wait out the window: before the probe (when this "
                              "run's earlier deliveries are in it) and after the limit triggered.")

    @model_validator(mode="after")
    def _bound_above_count(self) -> WebhookRateLimit:
        if self.max_requests <= self.count:
            raise ValueError("max_requests must exceed count, or the limit can never trigger")
        return self


class WebhookStorage(Strict):
    plaintext_fields: dict[str, str] = Field(default_factory=dict, description="Payload field -> sentinel value "
                                             "sent by the probe ({run_id} placeholder); none may be stored.")
    sql: str = Field(description="Rows that store the sentinel; binds :delivery_id, :field, :value. Zero rows = pass.")


class WebhooksParams(PhaseParams):
    enabled: bool = True
    endpoint: str = Field(description="Path (or URL) of the receiver.")
    secret: str = Field(description="Signing secret, a ${VAR} reference.")
    signature: SignatureScheme = Field(default_factory=SignatureScheme)
    headers: dict[str, str] = Field(default_factory=lambda: {"Content-Type": "application/json"})
    delivery_id_header: str | None = Field(None, description="Header carrying the delivery id (GitHub style).")
    payload: dict[str, Any] = Field(default_factory=lambda: {"id": "{delivery_id}", "type": "rehearsal.ping"},
                                    description="Delivery body; placeholders {delivery_id}, {run_id}.")
    accept_status: list[int] = Field(default_factory=lambda: [200, 201, 202, 204])
    reject_status: list[int] = Field(default_factory=lambda: [400, 401, 403])
    replay: WebhookReplay | None = Field(default_factory=WebhookReplay)
    idempotency: WebhookIdempotency | None = None
    rate_limit: WebhookRateLimit | None = None
    storage: WebhookStorage | None = None
    cleanup: Cleanup | None = Field(None, description="Removes this run's deliveries, at the end of the phase.")

    @field_validator("secret")
    @classmethod
    def _secret_reference(cls, value: str) -> str:
        if not REF_RE.search(value):
            raise ValueError("write the signing secret as a ${VAR} reference, not inline")
        return value
