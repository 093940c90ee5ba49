-- Silences (issue 4, `sensord silence`): a silence may be limited to named
-- rules (empty: every non-safety rule it matches), and an early end records
-- who ended it. Safety rules are never muted whatever a silence names; the
-- command line refuses to name one and the store never looks a silence up
-- for a safety rule.

ALTER TABLE silences
    ADD COLUMN rules      text[] NOT NULL DEFAULT '{}',
    ADD COLUMN expired_by text CHECK (expired_by <> ''),
    ADD CONSTRAINT silences_expired_by CHECK (expired_by IS NULL OR expired_at IS NOT NULL);
