-- Least privilege and tamper evidence (issue 11, item 7).
--
-- Two roles. The OWNER (the login that runs `sensord migrate`, and so owns
-- every table) changes the schema; the daemon and the operator commands run
-- as a login that is a member of the fixed NOLOGIN role `sensord_runtime`,
-- which holds only the DML below. scripts/services creates both; on another
-- server docs/operations.md says how. Every later migration that creates a
-- table grants what the runtime needs on it: there are no default privileges,
-- so a forgotten grant fails loudly in the tests instead of granting too much.
--
-- The audit tables (work_order_events, alert_events) are insert-only for the
-- runtime role, a trigger refuses UPDATE and DELETE whoever asks, and each
-- row carries sha256 over its content and the previous row's hash: one chain
-- per table, appended under a row lock on the table's head in
-- audit_chain_heads, so concurrent inserts from several instances still form
-- one chain. `sensord audit verify` recomputes it.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sensord_runtime') THEN
        BEGIN
            CREATE ROLE sensord_runtime NOLOGIN;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE EXCEPTION 'role sensord_runtime does not exist and % may not create it',
                current_user
                USING HINT = 'as a superuser: CREATE ROLE sensord_runtime NOLOGIN; '
                    'GRANT sensord_runtime TO <the daemon''s login> (docs/operations.md)';
        END;
    END IF;
END
$$;

-- ---------------------------------------------------------------------------
-- The runtime role's privileges.

GRANT USAGE ON SCHEMA public TO sensord_runtime;
GRANT SELECT ON schema_migrations TO sensord_runtime;  -- the daemon refuses a schema behind

-- Readings are evidence: appended, read, expired only through sensord_expire_readings.
GRANT SELECT, INSERT ON readings TO sensord_runtime;
GRANT SELECT, INSERT, DELETE ON dead_letters TO sensord_runtime;  -- DELETE: retention

-- The registry: `sensord registry import` upserts and deletes.
GRANT SELECT, INSERT, UPDATE, DELETE ON
    devices, streets, grid_units, organisations, compounds, buildings, addresses,
    households, residents, staff, staff_grid_units, responsibilities
    TO sensord_runtime;

-- Mutable state of alerts and orders.
GRANT SELECT, INSERT, UPDATE ON alerts, silences, work_orders, outbox TO sensord_runtime;
GRANT SELECT, INSERT, UPDATE, DELETE ON rule_state TO sensord_runtime;

-- The audit trail: append and read, nothing else.
GRANT SELECT, INSERT ON work_order_events, alert_events TO sensord_runtime;

-- drop_chunks needs the hypertable's owner; retention asks the owner's function,
-- which never drops less than a day old (retention.readings_days >= 1).
CREATE FUNCTION sensord_expire_readings(older_than interval) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    dropped integer;
BEGIN
    IF older_than IS NULL OR older_than < interval '1 day' THEN
        RAISE EXCEPTION 'readings younger than a day are never expired (asked: %)', older_than;
    END IF;
    SELECT count(*) INTO dropped FROM drop_chunks('public.readings', older_than => older_than);
    RETURN dropped;
END
$$;
REVOKE ALL ON FUNCTION sensord_expire_readings(interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sensord_expire_readings(interval) TO sensord_runtime;

-- ---------------------------------------------------------------------------
-- The audit chain.

-- One head per chained table: the last row's position and hash. Only the
-- owner's trigger function writes it; the runtime role may only read it.
-- It also lets `audit verify` see rows deleted from the end of a chain.
CREATE TABLE audit_chain_heads (
    table_name  text    PRIMARY KEY CHECK (table_name IN ('work_order_events', 'alert_events')),
    chain_seq   bigint  NOT NULL CHECK (chain_seq >= 0),
    hash        bytea   NOT NULL
);
GRANT SELECT ON audit_chain_heads TO sensord_runtime;  -- `sensord audit verify` reads it

ALTER TABLE work_order_events ADD COLUMN chain_seq bigint, ADD COLUMN prev_hash bytea,
    ADD COLUMN hash bytea;
ALTER TABLE alert_events ADD COLUMN chain_seq bigint, ADD COLUMN prev_hash bytea,
    ADD COLUMN hash bytea;

-- The hash of a row: sha256(previous hash || the row's canonical text). The
-- text is jsonb's (keys in a fixed order) with times spelled in UTC, so it
-- does not depend on the session's TimeZone or DateStyle. The column lists
-- are fixed here: a later column is outside the chain unless a new digest says so.
CREATE FUNCTION audit_time(at timestamptz) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

CREATE FUNCTION work_order_event_digest(prev bytea, e work_order_events) RETURNS bytea
    LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT sha256(prev || convert_to(jsonb_build_object(
        'chain_seq', e.chain_seq, 'id', e.id, 'order_id', e.order_id, 'at', audit_time(e.at),
        'actor', e.actor, 'role', e.role, 'event', e.event, 'from_state', e.from_state,
        'to_state', e.to_state, 'note', e.note, 'detail', e.detail)::text, 'UTF8'))
$$;

CREATE FUNCTION alert_event_digest(prev bytea, e alert_events) RETURNS bytea
    LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT sha256(prev || convert_to(jsonb_build_object(
        'chain_seq', e.chain_seq, 'id', e.id, 'alert_id', e.alert_id, 'at', audit_time(e.at),
        'event', e.event, 'actor', e.actor, 'detail', e.detail)::text, 'UTF8'))
$$;

-- The chain starts from 32 zero bytes; rows already there (an upgrade) are
-- chained in id order, the order they were written in by a single instance.
DO $$
DECLARE
    seq bigint := 0;
    prev bytea := '\x0000000000000000000000000000000000000000000000000000000000000000';
    e record;
BEGIN
    FOR e IN SELECT * FROM work_order_events ORDER BY id LOOP
        seq := seq + 1;
        UPDATE work_order_events w SET chain_seq = seq, prev_hash = prev WHERE w.id = e.id;
        UPDATE work_order_events w SET hash = work_order_event_digest(prev, w)
            WHERE w.id = e.id RETURNING w.hash INTO prev;
    END LOOP;
    INSERT INTO audit_chain_heads VALUES ('work_order_events', seq, prev);

    seq := 0;
    prev := '\x0000000000000000000000000000000000000000000000000000000000000000';
    FOR e IN SELECT * FROM alert_events ORDER BY id LOOP
        seq := seq + 1;
        UPDATE alert_events a SET chain_seq = seq, prev_hash = prev WHERE a.id = e.id;
        UPDATE alert_events a SET hash = alert_event_digest(prev, a)
            WHERE a.id = e.id RETURNING a.hash INTO prev;
    END LOOP;
    INSERT INTO audit_chain_heads VALUES ('alert_events', seq, prev);
END
$$;

ALTER TABLE work_order_events ALTER COLUMN chain_seq SET NOT NULL,
    ALTER COLUMN prev_hash SET NOT NULL, ALTER COLUMN hash SET NOT NULL;
ALTER TABLE alert_events ALTER COLUMN chain_seq SET NOT NULL,
    ALTER COLUMN prev_hash SET NOT NULL, ALTER COLUMN hash SET NOT NULL;
CREATE UNIQUE INDEX work_order_events_chain ON work_order_events (chain_seq);
CREATE UNIQUE INDEX alert_events_chain ON alert_events (chain_seq);

-- Appends a row to its table's chain, whatever chain columns the insert gave.
-- SELECT ... FOR UPDATE on the head serialises appenders: a second instance
-- waits for the first one's commit and then reads the head it wrote (READ
-- COMMITTED), or fails with a serialization error (REPEATABLE READ) -- never
-- a fork. SECURITY DEFINER: the runtime role cannot touch the heads itself.
CREATE FUNCTION audit_chain_append() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    head audit_chain_heads;
BEGIN
    SELECT * INTO STRICT head FROM audit_chain_heads WHERE table_name = TG_TABLE_NAME FOR UPDATE;
    NEW.chain_seq := head.chain_seq + 1;
    NEW.prev_hash := head.hash;
    IF TG_TABLE_NAME = 'work_order_events' THEN
        NEW.hash := work_order_event_digest(head.hash, NEW);
    ELSE
        NEW.hash := alert_event_digest(head.hash, NEW);
    END IF;
    UPDATE audit_chain_heads SET chain_seq = NEW.chain_seq, hash = NEW.hash
        WHERE table_name = TG_TABLE_NAME;
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION audit_chain_append() FROM PUBLIC;

-- The second line behind the missing grants: nobody edits or deletes an
-- audit row without first disabling this trigger (which only the owner can).
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

-- "zz": BEFORE triggers fire in name order, and the hash must see the final row.
CREATE TRIGGER zz_audit_chain BEFORE INSERT ON work_order_events
    FOR EACH ROW EXECUTE FUNCTION audit_chain_append();
CREATE TRIGGER zz_audit_chain BEFORE INSERT ON alert_events
    FOR EACH ROW EXECUTE FUNCTION audit_chain_append();
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON work_order_events
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON alert_events
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
