-- Management API keys, stored hashed (SHA-256 of the key's random secret: keys are 32 random bytes,
-- so a slow hash adds nothing). Scopes: admin (everything), read (read everything), agent (read its
-- own wallet, bind traces and request cards within its caps).

CREATE TABLE gateway.api_keys (
    key_id       text PRIMARY KEY,
    secret_hash  text NOT NULL,
    scope        text NOT NULL CHECK (scope IN ('admin', 'read', 'agent')),
    wallet_id    text,
    label        text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    CHECK ((scope = 'agent') = (wallet_id IS NOT NULL))
);
