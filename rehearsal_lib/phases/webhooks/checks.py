"""Webhook processing: signature (valid / bad / missing), replay window, idempotency, rate limit,
minimal storage. Every delivery is signed with the params' HMAC-SHA256 scheme (header, what is
signed, hex or base64, a prefix or a Stripe-like `t=...,v1=...` value).

Each probe sends real deliveries, so every check writes to the target: production refuses them
(`skip` with the reason) unless the run allows destructive steps.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

from rehearsal_lib.checks.wording import not_configured, plural, secs, tally, times
from rehearsal_lib.phase import Outcome, PhaseRun
from rehearsal_lib.phases.webhooks.params import SignatureScheme, WebhooksParams
from rehearsal_lib.probes.http import HttpResult, request
from rehearsal_lib.probes.placeholders import PlaceholderError, expand, expand_text, unknown
from rehearsal_lib.probes.sql import query, scalar, strip_statement
from rehearsal_lib.results import Check, StatusName

WRONG_SECRET = "rehearsal-wrong-secret"
FULL_BUCKET_WAIT_S = 15.0  # the rate-limit probe waits out a window this short when the bucket is already full


def signature_headers(scheme: SignatureScheme, secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    """The headers a sender using `scheme` puts on `body` signed at `timestamp`."""
    for name in unknown(scheme.signed_payload, ("timestamp", "body")):
        raise PlaceholderError(name, "signature.signed_payload", ("timestamp", "body"))
    pre, found, post = scheme.signed_payload.replace("{timestamp}", str(timestamp)).partition("{body}")
    message = pre.encode() + (body + post.encode() if found else b"")
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    sig = digest.hex() if scheme.encoding == "hex" else base64.b64encode(digest).decode()
    headers = {scheme.header: expand_text(scheme.format, {"signature": sig, "timestamp": str(timestamp)},
                                          "signature.format")}
    if scheme.timestamp_header:
        headers[scheme.timestamp_header] = str(timestamp)
    return headers


@dataclass
class Sent:
    """One request the sender made: when (epoch seconds), to which endpoint, with which headers."""

    at: float
    endpoint: str
    headers: dict[str, str]
    status: int | None = None


class Sender:
    """Builds and sends deliveries for one phase run; delivery ids carry the run id
    (`rehearsal-<run_id>-<n>`) and every request is recorded, so later probes can count this run's
    own traffic (e.g. what already sits in a rate-limit bucket)."""

    def __init__(self, ctx: PhaseRun[WebhooksParams]):
        self.ctx = ctx
        self.s: WebhooksParams = ctx.settings
        self.run_id = ctx.run_id
        self.secret = ctx.resolve(self.s.secret) or ""
        self.n = 0
        self.sent: list[Sent] = []

    def delivery(self, extra: dict[str, Any] | None = None) -> tuple[str, bytes]:
        self.n += 1
        delivery_id = f"rehearsal-{self.run_id}-{self.n}"
        payload = expand(self.s.payload, {"delivery_id": delivery_id, "run_id": self.run_id}, "payload")
        payload.update(extra or {})
        return delivery_id, json.dumps(payload, separators=(",", ":")).encode()

    def send(self, delivery_id: str, body: bytes, *, secret: str | None = None, timestamp: int | None = None,
             signed: bool = True, headers: dict[str, str] | None = None) -> HttpResult:
        out = dict(self.s.headers)
        if self.s.delivery_id_header:
            out[self.s.delivery_id_header] = delivery_id
        if signed:
            ts = int(time.time()) if timestamp is None else timestamp
            out.update(signature_headers(self.s.signature, self.secret if secret is None else secret, body, ts))
        out.update(headers or {})
        sent = Sent(time.time(), self.s.endpoint, out)
        self.sent.append(sent)
        res = request(self.ctx.http, "POST", self.s.endpoint, headers=out, content=body)
        sent.status = res.status
        return res

    def accepted(self) -> int:
        """How many of this run's deliveries the receiver accepted (records it may have created)."""
        return sum(1 for r in self.sent if r.status in self.s.accept_status)

    def sent_within(self, window_s: float, bucket: dict[str, str]) -> list[float]:
        """When this run sent requests to the endpoint within the last `window_s` seconds that share the
        bucket the `bucket` headers select (every request, when they select none)."""
        since = time.time() - window_s

        def same_bucket(headers: dict[str, str]) -> bool:
            lower = {k.lower(): v for k, v in headers.items()}
            return all(lower.get(k.lower()) == v for k, v in bucket.items())

        return [r.at for r in self.sent if r.endpoint == self.s.endpoint and r.at >= since and same_bucket(r.headers)]


def _sender(ctx: PhaseRun[WebhooksParams]) -> Sender:
    return ctx.cached("webhooks.sender", lambda: Sender(ctx))


def _answer(res: HttpResult, allowed: list[int], expected: str, what: str) -> Outcome:
    if res.error:
        return Outcome("error", res.describe(), expected, res.evidence())
    ok = res.status in allowed
    return Outcome("pass" if ok else "fail", f"{what} answered HTTP {res.status}", expected, res.evidence(),
                   {"status": res.status, "elapsed_ms": round(res.elapsed_ms, 2)})


def _codes(codes: list[int]) -> str:
    return "/".join(str(c) for c in codes)


def check_signatures(ctx: PhaseRun[WebhooksParams]) -> list[Check]:
    """A correctly signed delivery is accepted; a wrongly signed and an unsigned one are rejected."""
    s: WebhooksParams = ctx.settings
    accept, reject = f"HTTP {_codes(s.accept_status)}", f"HTTP {_codes(s.reject_status)}"

    def valid() -> Outcome:
        snd = _sender(ctx)
        return _answer(snd.send(*snd.delivery()), s.accept_status, accept, "a validly signed delivery")

    def bad() -> Outcome:
        snd = _sender(ctx)
        return _answer(snd.send(*snd.delivery(), secret=WRONG_SECRET), s.reject_status, reject,
                       "a delivery signed with the wrong secret")

    def missing() -> Outcome:
        snd = _sender(ctx)
        return _answer(snd.send(*snd.delivery(), signed=False), s.reject_status, reject, "an unsigned delivery")

    return [
        ctx.run("webhooks.signature.valid", "Validly signed delivery is accepted", valid,
                expected=accept, severity="blocker", writes=True),
        ctx.run("webhooks.signature.bad", "Delivery with a bad signature is rejected", bad,
                expected=reject, severity="blocker", writes=True),
        ctx.run("webhooks.signature.missing", "Delivery without a signature is rejected", missing,
                expected=reject, severity="blocker", writes=True),
    ]


def check_replay(ctx: PhaseRun[WebhooksParams]) -> Check | None:
    """A correctly signed delivery whose timestamp lies outside the replay window is rejected."""
    s: WebhooksParams = ctx.settings
    if s.replay is None:
        ctx.note(not_configured("phases.webhooks.replay", "that a delivery signed outside the replay window is "
                                                          "rejected"))
        return None
    replay = s.replay
    age = replay.window_s + replay.stale_by_s
    expected = (f"HTTP {_codes(s.reject_status)} for a delivery signed {secs(age)} ago "
                f"(replay window {secs(replay.window_s)})")

    def probe() -> Outcome:
        if not s.signature.signs_timestamp:
            return Outcome("skip", "the signature scheme signs no {timestamp}: a replay window cannot be tested",
                           expected)
        snd = _sender(ctx)
        out = _answer(snd.send(*snd.delivery(), timestamp=int(time.time()) - age), s.reject_status, expected,
                      f"a delivery signed {secs(age)} ago")
        out.metrics = {**out.metrics, "age_s": age}
        return out

    return ctx.run("webhooks.replay.stale_timestamp", "Delivery outside the replay window is rejected", probe,
                   expected=expected, severity="blocker", writes=True)


def check_idempotency(ctx: PhaseRun[WebhooksParams]) -> Check | None:
    """The same delivery sent twice is processed once (a SQL query counts its processing)."""
    s: WebhooksParams = ctx.settings
    if s.idempotency is None:
        ctx.note(not_configured("phases.webhooks.idempotency", "that the same delivery sent twice is processed once"))
        return None
    idem = s.idempotency
    expected = f"both answered, processed {times(idem.expected)}"

    def probe() -> Outcome:
        snd = _sender(ctx)
        delivery_id, body = snd.delivery()
        ts = int(time.time())
        first = snd.send(delivery_id, body, timestamp=ts)
        second = snd.send(delivery_id, body, timestamp=ts)  # byte-identical: a redelivery
        evidence: dict[str, Any] = {"delivery_id": delivery_id, "first": first.evidence(), "second": second.evidence(),
                                    "query": strip_statement(idem.sql)}
        for res, allowed, name in ((first, s.accept_status, "first send"), (second, idem.duplicate_status,
                                                                             "second send")):
            if res.error:
                return Outcome("error", f"{name}: {res.describe()}", expected, evidence)
            if res.status not in allowed:
                return Outcome("fail", f"{name} answered HTTP {res.status}", expected, evidence)
        n = scalar(ctx.engine, idem.sql, {"delivery_id": delivery_id})
        evidence["processed"] = n
        count = int(n or 0)
        status: StatusName = "pass" if count == idem.expected else "fail"
        return Outcome(status, f"sent twice, processed {times(count)}", expected, evidence, {"processed": count})

    return ctx.run("webhooks.idempotency.duplicate", "The same delivery twice is processed once", probe,
                   expected=expected, severity="blocker", writes=True)


def check_rate_limit(ctx: PhaseRun[WebhooksParams]) -> Check | None:
    """Past `count` deliveries within the window the receiver answers 429; bounded by `max_requests`.

    The phase's own earlier deliveries may sit in the same bucket: those this run sent within the last
    `window_s` (sharing the probe's bucket headers) are counted, and a first 429 is judged against
    `count` minus them. With `cooldown_s` long enough the probe first waits them out of the window."""
    s: WebhooksParams = ctx.settings
    if s.rate_limit is None:
        ctx.note(not_configured("phases.webhooks.rate_limit", "that the receiver answers 429 past its configured "
                                                              "count of deliveries per window"))
        return None
    rl = s.rate_limit
    expected = (f"HTTP {rl.status} once more than {rl.count} deliveries arrive within {secs(rl.window_s)}, "
                f"this run's earlier deliveries included (at most {rl.max_requests} sent)")
    codes: list[int | None] = []
    budget: dict[str, int] = {"already": 0, "allowed": rl.count}

    def answers() -> str:
        return tally([c if c is not None else "no answer" for c in codes], "HTTP")

    def probe() -> Outcome:
        snd = _sender(ctx)
        earlier = snd.sent_within(rl.window_s, rl.headers)
        waited = 0.0
        if earlier:
            need = rl.window_s - (time.time() - max(earlier)) + 0.05
            # wait this run's deliveries out of the window instead of counting them: up to cooldown_s, and up to
            # FULL_BUCKET_WAIT_S when they alone leave nothing to judge with (a re-run right after a burst)
            bound = max(rl.cooldown_s, FULL_BUCKET_WAIT_S if len(earlier) >= rl.count else 0)
            if 0 < need <= bound:
                with ctx.progress(f"rate limit: waiting {secs(need)} for this run's deliveries to leave the window",
                                  total_s=need, delay_s=1):
                    time.sleep(need)
                waited = need
                earlier = snd.sent_within(rl.window_s, rl.headers)
        already = len(earlier)
        allowed = rl.count - already
        budget.update(already=already, allowed=allowed)
        own: dict[str, float] = {"limit": rl.count, "already_sent_in_window": already, "allowed": allowed}
        if waited:
            own["waited_s"] = round(waited, 2)
        said = []
        if waited:
            said.append(f"waited {secs(waited)} for this run's earlier deliveries to leave the window")
        if already:
            said.append(f"{already} sent earlier by this run within the window: {max(allowed, 0)} of {rl.count} left")
        note = f" ({'; '.join(said)})" if said else ""
        if allowed <= 0:  # the bucket may be full of our own traffic: any 429 would prove nothing about `count`
            return Outcome("error", f"this run already sent {already} deliveries into the probe's bucket within "
                                    f"{secs(rl.window_s)} (limit {rl.count}): the limit cannot be judged; give the "
                                    "probe its own bucket (rate_limit.headers) or wait the window out "
                                    "(rate_limit.cooldown_s)", expected, own)
        t0 = time.monotonic()
        i = 0
        while i < rl.max_requests:
            i += 1
            res = snd.send(*snd.delivery(), headers=rl.headers)
            codes.append(res.status)
            if res.error:
                return Outcome("error", f"request {i}: {res.describe()}", expected, {"answers": answers(),
                                                                                     "codes": codes, **own})
            if res.status == rl.status and i == 1 < allowed and "full_bucket_waited_s" not in own:
                # limited before anything of this burst counted: the bucket was full already, of traffic this
                # kernel did not send (an earlier run or kernel within the window): not a verdict on `count`.
                # Wait the window out once and send again, or say why it cannot be judged.
                if rl.window_s > max(rl.cooldown_s, FULL_BUCKET_WAIT_S):
                    return Outcome("error", f"HTTP {rl.status} already at request 1: the bucket was full before "
                                            "this probe sent anything (deliveries from before it, e.g. an earlier run "
                                            f"or a re-run within {secs(rl.window_s)}); the limit cannot be judged. "
                                            f"Wait {secs(rl.window_s)} and run it again, or set rate_limit.cooldown_s "
                                            f"to at least {rl.window_s:g} so the probe waits", expected,
                                   {**own, "codes": codes, "last": res.evidence()}, {"limited_at": 1})
                with ctx.progress(f"rate limit: bucket full at the first delivery, waiting {secs(rl.window_s)} "
                                  "for the window to pass", total_s=rl.window_s, delay_s=1):
                    time.sleep(rl.window_s + 0.05)
                own["full_bucket_waited_s"] = round(rl.window_s + 0.05, 2)
                said.append(f"HTTP {rl.status} at the first delivery (bucket full of earlier traffic): waited "
                            f"{secs(rl.window_s)} for the window to pass and sent again")
                note = f" ({'; '.join(said)})"
                codes.clear()
                i, t0 = 0, time.monotonic()
                continue
            if res.status == rl.status:
                evidence = {"answers": answers(), "seconds": round(time.monotonic() - t0, 3), "codes": codes,
                            **own, "last": res.evidence()}
                if rl.cooldown_s:
                    time.sleep(rl.cooldown_s)  # let the window pass before other phases send deliveries
                if i <= allowed:
                    why = [w for w in said if not w.startswith("waited")]
                    return Outcome("fail", f"HTTP {rl.status} already at request {i} (configured count {rl.count}"
                                           f"{'; ' + '; '.join(why) if why else ''})",
                                   expected, evidence, {"limited_at": i, "already_sent": already})
                return Outcome("pass", f"HTTP {rl.status} at request {i} after {i - 1} accepted{note}", expected,
                               evidence, {"limited_at": i, "already_sent": already})
            if res.status not in s.accept_status:
                return Outcome("fail", f"request {i} answered HTTP {res.status}, neither accepted nor {rl.status}",
                               expected, {"answers": answers(), "codes": codes, **own, "last": res.evidence()})
        took = time.monotonic() - t0
        return Outcome("fail", f"no HTTP {rl.status} in {rl.max_requests} deliveries within {took:.1f} s "
                               f"({answers()}): the limit is not enforced{note}", expected,
                       {"answers": f"{answers()}, no {rl.status}", "seconds": round(took, 3), **own},
                       {"sent": len(codes), "accepted_past_limit": max(0, len(codes) - max(allowed, 0)),
                        "already_sent": already})

    check = ctx.run("webhooks.rate_limit.enforced", "Rate limit answers 429 past its count", probe,
                    expected=expected, writes=True)
    if codes:
        _rate_limit_figure(ctx, codes, budget["allowed"], rl.status, s.accept_status, budget["already"])
    return check


def _rate_limit_figure(ctx: PhaseRun[WebhooksParams], codes: list[int | None], count: int, limit_status: int,
                       accept: list[int], already: int = 0) -> None:
    """One bar per delivery, coloured by what it means: accepted within the limit, accepted past it (the
    failure), limited as it should be, limited too early, or another answer. `count` is what the
    bucket had left for the probe (`already` of the configured limit were sent earlier by this run)."""
    import plotly.graph_objects as go

    def kind(i: int, code: int | None) -> str:
        if code == limit_status:
            return "limited too early" if i <= count else f"HTTP {limit_status} past the limit (expected)"
        if code in accept:
            return "accepted within the limit" if i <= count else f"accepted past the limit (should be {limit_status})"
        return "other answer"

    colours = {"accepted within the limit": "#2da44e", f"accepted past the limit (should be {limit_status})": "#cf222e",
               f"HTTP {limit_status} past the limit (expected)": "#0969da", "limited too early": "#bf8700",
               "other answer": "#57606a"}
    fig = go.Figure()
    for name, colour in colours.items():
        idx = [i for i, c in enumerate(codes, 1) if kind(i, c) == name]
        if idx:
            fig.add_trace(go.Bar(x=idx, y=[1] * len(idx), name=name, marker_color=colour,
                                 text=[str(codes[i - 1] or "none") for i in idx], textposition="inside",
                                 hovertext=[f"delivery {i}: HTTP {codes[i - 1]}" for i in idx], hoverinfo="text"))
    label = f"limit: {count + already} − {already} sent earlier = {count}" if already else f"limit: {count}"
    fig.add_vline(x=max(count, 0) + 0.5, line_dash="dash", annotation_text=label, annotation_position="top")
    fig.update_layout(title=f"Rate-limit probe: {tally(codes, 'HTTP')} (dashed: the configured limit)",
                      height=260, barmode="overlay", yaxis_visible=False, xaxis_title="delivery #",
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0),
                      margin=dict(l=20, r=20, t=80, b=40))
    ctx.figure(fig)


def check_storage(ctx: PhaseRun[WebhooksParams]) -> Check | None:
    """A delivery carrying sentinel values of the plaintext fields is stored without any of them."""
    s: WebhooksParams = ctx.settings
    if s.storage is None or not s.storage.plaintext_fields:
        ctx.note(not_configured("phases.webhooks.storage", "that a delivery carrying sentinel values of the plaintext "
                                                           "fields is stored without any of them"))
        return None
    st = s.storage
    expected = "no configured plaintext field stored (0 rows)"

    def probe() -> Outcome:
        snd = _sender(ctx)
        sentinels = {f: expand(v, {"run_id": snd.run_id}, f"storage.plaintext_fields.{f}")
                     for f, v in st.plaintext_fields.items()}
        delivery_id, body = snd.delivery(sentinels)
        res = snd.send(delivery_id, body)
        evidence: dict[str, Any] = {"delivery_id": delivery_id, "response": res.evidence(),
                                    "query": strip_statement(st.sql), "fields": list(sentinels)}
        if res.error:
            return Outcome("error", res.describe(), expected, evidence)
        if res.status not in s.accept_status:
            return Outcome("fail", f"the delivery was not accepted (HTTP {res.status}): storage not verifiable",
                           expected, evidence)
        stored = {}
        for field, value in sentinels.items():
            _, rows = query(ctx.engine, st.sql, {"delivery_id": delivery_id, "field": field, "value": value}, limit=5)
            if rows:
                stored[field] = len(rows)
        evidence["stored_fields"] = stored
        if stored:
            return Outcome("fail", f"plaintext stored: {', '.join(sorted(stored))}", expected, evidence,
                           {"fields_stored": len(stored)})
        return Outcome("pass", f"none of the {plural(len(sentinels), 'field')} stored in plaintext", expected, evidence,
                       {"fields_stored": 0})

    return ctx.run("webhooks.storage.no_plaintext", "Stored payload keeps no plaintext field", probe,
                   expected=expected, severity="blocker", writes=True)


def check_cleanup(ctx: PhaseRun[WebhooksParams]) -> Check | None:
    """Remove this run's deliveries (`webhooks.cleanup`), at the end of the phase."""
    from rehearsal_lib.checks.cleanup import check_cleanup as cleanup

    return cleanup(ctx, created=_sender(ctx).accepted())
