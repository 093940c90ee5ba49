-- Work orders (issue 5): an alert becomes an order owned by one party, tracked
-- to verified closure; every transition audited; SLA deadlines stored here and
-- driven from here; notifications leave through a transactional outbox.

-- Each firing episode of an alert (first fire, and every reopen after a
-- clear) is dispatched once: the dispatcher takes alerts whose episode is
-- ahead of the episode it dispatched, FOR UPDATE SKIP LOCKED.
ALTER TABLE alerts ADD COLUMN episode integer NOT NULL DEFAULT 1 CHECK (episode >= 1);
ALTER TABLE alerts ADD COLUMN dispatched_episode integer NOT NULL DEFAULT 0;
CREATE INDEX alerts_undispatched ON alerts (id) WHERE dispatched_episode < episode;
-- On upgrade, the history stays history: only alerts open now become orders.
UPDATE alerts SET dispatched_episode = episode WHERE state = 'cleared';

-- The top of the escalation chain: the district's office above the street.
ALTER TABLE organisations DROP CONSTRAINT organisations_org_type_check;
ALTER TABLE organisations ADD CONSTRAINT organisations_org_type_check CHECK (org_type IN (
    'ops_centre', 'ops_workstation', 'residents_committee', 'property_company',
    'owners_committee', 'elevator_vendor', 'device_vendor', 'enforcement', 'district_office'));

CREATE TABLE work_orders (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id         bigint      NOT NULL REFERENCES alerts (id),
    alert_episode    integer     NOT NULL,
    rule             text        NOT NULL,
    subject          text        NOT NULL,
    category         text        NOT NULL,
    severity         text        NOT NULL CHECK (severity IN ('info', 'warning', 'major', 'critical')),
    street_id        text,
    device_id        text,
    address_id       text,
    area_id          text,        -- the residential area (居委) of the place, for the report
    place            jsonb       NOT NULL DEFAULT '{}',   -- label, type, counts: no personal data
    state            text        NOT NULL CHECK (state IN ('new', 'dispatched', 'acknowledged',
                         'on_site', 'resolved', 'verified', 'closed', 'cancelled', 'reopened')),
    owner_role       text        NOT NULL,
    owner_org        text,
    owner_staff      text,
    unrouted         boolean     NOT NULL DEFAULT false,  -- fell back to the ops centre
    notified         jsonb       NOT NULL DEFAULT '[]',   -- [{role, org_id, staff_id}]
    escalation_level integer     NOT NULL DEFAULT 0 CHECK (escalation_level >= 0),
    resolved_by_role text,
    -- SLA of the order, fixed when it was created (a policy reload changes new orders only)
    sla_ack_s        integer     NOT NULL CHECK (sla_ack_s > 0),
    sla_arrive_s     integer     NOT NULL CHECK (sla_arrive_s > 0),
    sla_resolve_s    integer     NOT NULL CHECK (sla_resolve_s > 0),
    verify_hold_s    integer     NOT NULL CHECK (verify_hold_s >= 0),
    due_phase        text        CHECK (due_phase IN ('ack', 'arrive', 'resolve')),
    due_at           timestamptz,
    created_at       timestamptz NOT NULL,
    dispatched_at    timestamptz,
    acknowledged_at  timestamptz,
    arrived_at       timestamptz,
    resolved_at      timestamptz,
    verified_at      timestamptz,
    closed_at        timestamptz,
    cancelled_at     timestamptz,
    reopen_count     integer     NOT NULL DEFAULT 0,
    updated_at       timestamptz NOT NULL,
    CHECK ((due_at IS NULL) = (due_phase IS NULL))
);
-- One active order per (rule, subject): a recurrence reopens it instead.
CREATE UNIQUE INDEX work_orders_one_active ON work_orders (rule, subject)
    WHERE state NOT IN ('closed', 'cancelled');
CREATE INDEX work_orders_due ON work_orders (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX work_orders_subject ON work_orders (rule, subject, id DESC);
CREATE INDEX work_orders_alert ON work_orders (alert_id);
CREATE INDEX work_orders_state ON work_orders (state, updated_at DESC);
CREATE INDEX work_orders_created ON work_orders (created_at);

-- The audit trail: who, when, from, to, note; escalations with their owners.
CREATE TABLE work_order_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id    bigint      NOT NULL REFERENCES work_orders (id),
    at          timestamptz NOT NULL,
    actor       text        NOT NULL CHECK (actor <> ''),
    role        text        NOT NULL CHECK (role <> ''),
    event       text        NOT NULL CHECK (event IN ('create', 'dispatch', 'ack', 'arrive',
                    'resolve', 'verify', 'close', 'cancel', 'reopen', 'escalate', 'recur',
                    'breach')),
    from_state  text,
    to_state    text        NOT NULL,
    note        text        NOT NULL DEFAULT '',
    detail      jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX work_order_events_order ON work_order_events (order_id, id);
CREATE INDEX work_order_events_at ON work_order_events (at);

-- Transactional outbox: written in the transaction that changed the order,
-- delivered afterwards (FOR UPDATE SKIP LOCKED), marked sent after the
-- broker's PUBACK or the webhook's 2xx. idempotency_key is what receivers
-- deduplicate on if a crash between delivery and commit sends a row twice.
CREATE TABLE outbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id        bigint      REFERENCES work_orders (id),
    created_at      timestamptz NOT NULL DEFAULT now(),
    channel         text        NOT NULL CHECK (channel IN ('mqtt', 'webhook')),
    destination     text        NOT NULL,   -- MQTT topic, or the organisation id of a webhook
    payload         jsonb       NOT NULL,
    idempotency_key text        NOT NULL UNIQUE,
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    last_error      text
);
CREATE INDEX outbox_pending ON outbox (next_attempt_at, id) WHERE sent_at IS NULL;
