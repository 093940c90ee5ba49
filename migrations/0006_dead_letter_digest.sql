-- Dead letters keep a bounded prefix of the payload (ingest.dead_letter_max_bytes),
-- with the size and SHA-256 of the whole message, so a flood of oversized
-- payloads costs kilobytes, not their full size, and a kept prefix can still be
-- matched against a capture. Forward only.
--
-- Rows written before this migration hold the whole payload; their size is
-- its length and their hash is computed here, so every row has both.

ALTER TABLE dead_letters
    ADD COLUMN payload_size   integer,
    ADD COLUMN payload_sha256 bytea;

UPDATE dead_letters
   SET payload_size = octet_length(payload), payload_sha256 = sha256(payload);

ALTER TABLE dead_letters
    ALTER COLUMN payload_size SET NOT NULL,
    ALTER COLUMN payload_sha256 SET NOT NULL,
    ADD CONSTRAINT dead_letters_payload_prefix
        CHECK (octet_length(payload) <= payload_size AND octet_length(payload_sha256) = 32);
