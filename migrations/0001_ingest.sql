-- Ingest spine: readings hypertable, dead letters, minimal device directory.
-- Forward only. Applied once by `sensord migrate`, recorded in schema_migrations.

CREATE EXTENSION IF NOT EXISTS timescaledb;

-- One wide row per reading. The typed columns are the union of the per-kind
-- fields of protocol v1 (docs/protocol.md); a kind leaves the others NULL,
-- which costs one bit each in the null bitmap. Fields a device sends beyond
-- the protocol go to `extra` so nothing it said is lost. docs/storage.md has
-- the measurement behind typed columns vs one jsonb column.
CREATE TABLE readings (
    ts           timestamptz      NOT NULL,  -- device time, never the server's
    received_at  timestamptz      NOT NULL,  -- when sensord took it off the broker
    device_id    text             NOT NULL,
    kind         text             NOT NULL,
    seq          bigint           NOT NULL,
    smoke        boolean,
    obscuration  real,
    temp_c       real,
    battery_pct  real,
    charging     boolean,
    power_w      real,
    current_a    real,
    state        text,
    door         text,
    floor        smallint,
    trapped      boolean,
    fault_code   text,
    blocked      boolean,
    blocked_s    integer,
    rssi_dbm     smallint,
    fw           text,
    extra        jsonb,
    CONSTRAINT readings_kind_check
        CHECK (kind IN ('smoke', 'ebike', 'elevator', 'fire_lane', 'heartbeat'))
);

-- One day per chunk: at the full-scale fleet (~6,000 devices, docs/storage.md)
-- a day is ~1 GiB of rows and index, so the current chunk's indexes stay in
-- memory, and retention in days drops whole chunks.
SELECT create_hypertable('readings', by_range('ts', INTERVAL '1 day'));

-- The redelivery key: a message redelivered by the broker carries the same
-- device, time and sequence number, so it lands on this index and
-- ON CONFLICT DO NOTHING stores it once. It also serves "latest readings of
-- device X", the registry's and the rule engine's lookup.
CREATE UNIQUE INDEX readings_device_ts_seq ON readings (device_id, ts DESC, seq);

CREATE TABLE dead_letters (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at  timestamptz NOT NULL,
    topic        text        NOT NULL,
    payload      bytea       NOT NULL,
    reason       text        NOT NULL,
    detail       text        NOT NULL DEFAULT '',
    device_id    text,
    CONSTRAINT dead_letters_reason_check CHECK (reason IN (
        'bad_topic', 'bad_json', 'schema', 'unknown_device', 'device_kind_mismatch',
        'device_id_mismatch', 'street_mismatch', 'too_large', 'clock_skew',
        'storage_rejected'))
);
CREATE INDEX dead_letters_received_at ON dead_letters (received_at);
CREATE INDEX dead_letters_reason ON dead_letters (reason, received_at);

-- Minimal device directory; the housing registry (0002+) extends it.
CREATE TABLE devices (
    device_id  text PRIMARY KEY CHECK (device_id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    kind       text NOT NULL CHECK (kind IN ('smoke', 'ebike', 'elevator', 'fire_lane')),
    street     text NOT NULL CHECK (street ~ '^[A-Za-z0-9_-]{1,64}$')
);

-- The daemon keeps the directory in memory; this tells it to reload without
-- a restart whenever the directory changes.
CREATE FUNCTION notify_registry_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('sensord_registry', TG_TABLE_NAME);
    RETURN NULL;
END;
$$;

CREATE TRIGGER devices_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON devices
    FOR EACH STATEMENT EXECUTE FUNCTION notify_registry_changed();
