-- Decisions' JSON (~2-4 KB each) is written twice per decision: in authorizer.decisions and in the
-- outbox. Over Postgres's 2 KB threshold each is compressed before it is stored, with pglz by
-- default: measured here, inserting and marking published 20,000 such rows cost Postgres 30-33 us
-- of CPU a row with pglz and 16.5 with lz4, for the same size on disk (issue 20, decision 0005).
-- New values only; rows already written keep their pglz (both read the same).
--
-- A server built without lz4 keeps pglz: the statement fails with feature_not_supported there, and
-- that is only slower, never wrong.
DO $$
BEGIN
    ALTER TABLE authorizer.decisions ALTER COLUMN decision SET COMPRESSION lz4;
    ALTER TABLE authorizer.outbox ALTER COLUMN payload SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'lz4 not supported by this server: decision payloads stay compressed with pglz';
END
$$;
