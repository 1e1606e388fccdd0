-- Foundation: the tables every service leans on. Later migrations add each service's own.
-- Money is bigint minor units plus a char(3) currency, never numeric or float.

CREATE SCHEMA IF NOT EXISTS authorizer;

-- Wallets and cards as the authorizer last persisted them (the source of truth for its memory).
CREATE TABLE authorizer.wallets (
    wallet_id    text PRIMARY KEY,
    currency     char(3) NOT NULL,
    time_zone    text NOT NULL,
    template     text NOT NULL,
    status       text NOT NULL CHECK (status IN ('active', 'frozen', 'closed')),
    policy       jsonb NOT NULL,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);

CREATE TABLE authorizer.cards (
    card_id            text PRIMARY KEY,
    wallet_id          text NOT NULL REFERENCES authorizer.wallets (wallet_id),
    issuer             text NOT NULL,
    issuer_card_token  text NOT NULL,
    last4              char(4) NOT NULL CHECK (last4 ~ '^[0-9]{4}$'),
    status             text NOT NULL CHECK (status IN ('active', 'frozen', 'closed')),
    policy             jsonb NOT NULL,
    expires_at         timestamptz,
    created_at         timestamptz NOT NULL,
    UNIQUE (issuer, issuer_card_token)
);
CREATE INDEX cards_wallet_id ON authorizer.cards (wallet_id);

-- Consumed offsets live with the state they produced, fenced by an epoch taken on assignment:
-- a zombie whose epoch is stale cannot commit.
CREATE TABLE authorizer.partition_offsets (
    consumer_group  text NOT NULL,
    topic           text NOT NULL,
    partition       integer NOT NULL CHECK (partition >= 0),
    next_offset     bigint NOT NULL CHECK (next_offset >= 0),
    epoch           bigint NOT NULL CHECK (epoch >= 0),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);

-- Transactional outbox: a message is written here in the same transaction as its cause, then
-- published; nothing is lost between Postgres and Kafka.
CREATE TABLE authorizer.outbox (
    outbox_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic         text NOT NULL,
    message_key   text NOT NULL,
    payload       jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
CREATE INDEX outbox_unpublished ON authorizer.outbox (outbox_id) WHERE published_at IS NULL;
