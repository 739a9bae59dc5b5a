-- Inbound webhook deliveries: one row per delivery id (the unique index is the idempotency guard).
-- Only an allow-list of payload fields is kept; the rest is represented by its SHA-256 digest.
CREATE TABLE webhook_deliveries (
    id            bigserial PRIMARY KEY,
    delivery_id   text        NOT NULL,
    source        text        NOT NULL,
    event_type    text        NOT NULL,
    payload       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    payload_sha256 text       NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX uq_webhook_deliveries_delivery_id ON webhook_deliveries (delivery_id);
