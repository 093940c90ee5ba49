-- Principals and their broker credentials (issue 11): devices, gateways (for a listed set of
-- devices), staff, organisation apps and sensord's own accounts. Only a hash of each secret
-- is stored, in Mosquitto's password-file format ($7$ = PBKDF2-SHA512), so that
-- `sensord broker config` can write the broker's password file from it.
CREATE TABLE principals (
    kind          text NOT NULL CHECK (kind IN ('device', 'gateway', 'staff', 'app', 'sensord')),
    principal_id  text NOT NULL CHECK (principal_id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    devices       text[] NOT NULL DEFAULT '{}',   -- a gateway's devices
    secret_hash   text NOT NULL CHECK (secret_hash ~ '^\$7\$[0-9]+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$'),
    issued_at     timestamptz NOT NULL,
    issued_by     text NOT NULL,
    revoked_at    timestamptz,
    PRIMARY KEY (kind, principal_id),
    CHECK (kind = 'gateway' OR cardinality(devices) = 0)
);

-- The runtime role (0007) issues, rotates and revokes through `sensord credentials` and reads
-- the table for `sensord broker config`; a revoked row is kept (revoked_at), never deleted.
GRANT SELECT, INSERT, UPDATE ON principals TO sensord_runtime;
