-- Alerts (issue 4): one open alert per (rule, subject), enforced here; the
-- rule engine's per-pair state, persisted in the transaction that stores the
-- readings that moved it; silences (maintenance windows).

CREATE TABLE alerts (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rule          text        NOT NULL,
    category      text        NOT NULL,
    severity      text        NOT NULL CHECK (severity IN ('info', 'warning', 'major', 'critical')),
    safety        boolean     NOT NULL DEFAULT false,
    subject       text        NOT NULL,           -- e.g. device:SMK-000123, household:H-000001
    device_id     text,
    address_id   text,
    state         text        NOT NULL DEFAULT 'firing'
                  CHECK (state IN ('firing', 'acknowledged', 'cleared')),
    count         integer     NOT NULL DEFAULT 1 CHECK (count >= 1),
    first_seen    timestamptz NOT NULL,           -- device time of the reading that fired it
    last_seen     timestamptz NOT NULL,
    cleared_at    timestamptz,
    clear_reason  text,
    acknowledged_at timestamptz,
    acknowledged_by text,
    silenced_by   bigint,                          -- the silence that muted it, if any
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((state = 'cleared') = (cleared_at IS NOT NULL))
);

-- The guarantee: two instances, a redelivered message or a replay can never
-- open a second alert for the same rule and subject.
CREATE UNIQUE INDEX alerts_one_open ON alerts (rule, subject) WHERE state <> 'cleared';
CREATE INDEX alerts_state ON alerts (state, last_seen DESC);
CREATE INDEX alerts_subject ON alerts (subject, last_seen DESC);

CREATE TABLE alert_events (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id  bigint      NOT NULL REFERENCES alerts (id),
    at        timestamptz NOT NULL DEFAULT now(),
    event     text        NOT NULL CHECK (event IN (
                  'fired', 'reopened', 'updated', 'acknowledged', 'cleared', 'silenced')),
    actor     text        NOT NULL DEFAULT 'sensord',
    detail    text        NOT NULL DEFAULT ''
);
CREATE INDEX alert_events_alert ON alert_events (alert_id, at);

-- Per (rule, subject) state machine, written only when it changes.
CREATE TABLE rule_state (
    rule        text        NOT NULL,
    subject     text        NOT NULL,
    state       jsonb       NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (rule, subject)
);

CREATE TABLE silences (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    scope       text        NOT NULL CHECK (scope IN ('device', 'address', 'building', 'kind')),
    value       text        NOT NULL,
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL,
    author      text        NOT NULL CHECK (author <> ''),
    reason      text        NOT NULL CHECK (reason <> ''),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expired_at  timestamptz,
    CHECK (ends_at > starts_at)
);
-- Looked up when an alert fires (rare), so the daemon keeps no copy.
CREATE INDEX silences_active ON silences (scope, value, ends_at) WHERE expired_at IS NULL;
