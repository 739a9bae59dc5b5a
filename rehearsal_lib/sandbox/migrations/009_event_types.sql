-- Restrict event types to the ones the API writes.
ALTER TABLE events
    ADD CONSTRAINT events_type_check CHECK (type IN ('started', 'answered', 'submitted'));
