-- Device clocks cannot clear rules (issue 11): an alert cleared by its rule
-- names the reading that cleared it, and records when its condition held
-- again after the clear. Telemetry verifies an order only on such a stored
-- reading of the alert's own device, held on the server's receive time
-- (cleared_at is now the receipt of the clearing reading), and never while
-- recurred_at contradicts the clear. Alerts cleared before this name no
-- reading: their orders are verified by a person.

ALTER TABLE alerts
    ADD COLUMN clear_device_id text,        -- the clearing reading's (device_id, ts, seq)
    ADD COLUMN clear_ts        timestamptz,
    ADD COLUMN clear_seq       bigint,
    ADD COLUMN recurred_at     timestamptz, -- receive time: the condition held again since
    ADD CONSTRAINT alerts_clear_reading CHECK (
        (clear_device_id IS NULL) = (clear_ts IS NULL) AND (clear_ts IS NULL) = (clear_seq IS NULL));
