-- The authorizer's durable state: one snapshot per wallet, every decision by issuer authorization
-- id (the idempotency key), written in the same transaction as the consumed offsets.

CREATE TABLE authorizer.wallet_state (
    wallet_id   text PRIMARY KEY,
    state       jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE authorizer.decisions (
    issuer_authorization_id  text PRIMARY KEY,
    wallet_id                text NOT NULL,
    approved                 boolean NOT NULL,
    reason                   text NOT NULL,
    decision                 jsonb NOT NULL,
    decided_at               timestamptz NOT NULL
);
CREATE INDEX decisions_wallet_id ON authorizer.decisions (wallet_id, decided_at);

-- Published rows are kept for a while for operators; unpublished ones are what the relay sends.
ALTER TABLE authorizer.outbox ADD COLUMN event_id uuid;
