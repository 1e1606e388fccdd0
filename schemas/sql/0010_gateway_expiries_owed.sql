-- An expiry the gateway owes the authorizer: a decline it answered itself (the deadline passed, or
-- publishing the request failed) for a request that may be on auth.requests. Until its
-- `authorization_expired` is published, a late approval's hold would stay (7 days by default) on
-- an authorization the issuer was told was declined. The answer's row says so (`expiry_owed_since`);
-- the row is cleared once the expiry is acknowledged, and the gateway's relay publishes what stays
-- owed (Kafka away at the time). See decision 0006.

ALTER TABLE gateway.answers ADD COLUMN expiry_owed_since timestamptz;
CREATE INDEX answers_expiry_owed ON gateway.answers (expiry_owed_since) WHERE expiry_owed_since IS NOT NULL;
