-- The notifier: approval requests opened by cap declines, the Slack messages owed (an outbox, so
-- no request is lost when Slack fails), and every click received. See decision 0008.

CREATE SCHEMA IF NOT EXISTS notifier;

-- What the notifier knows of each wallet, from wallet.events: where to ask, who may answer.
CREATE TABLE notifier.wallets (
    wallet_id         text PRIMARY KEY,
    label             text NOT NULL,
    currency          text NOT NULL,
    time_zone         text NOT NULL,
    slack_channel     text,
    approvers         text[] NOT NULL,
    raise_step_minor  bigint NOT NULL,
    max_raise_minor   bigint
);

CREATE TABLE notifier.cards (
    card_id    text PRIMARY KEY,
    wallet_id  text NOT NULL,
    label      text NOT NULL,
    last4      text NOT NULL
);

CREATE TABLE notifier.requests (
    request_id               uuid PRIMARY KEY,
    wallet_id                text NOT NULL,
    cap                      text NOT NULL,
    scope_id                 text NOT NULL,
    window_key               text NOT NULL,           -- the day or month the cap was hit in
    window_ends_at           timestamptz NOT NULL,    -- an approval's raise lasts until then
    state                    text NOT NULL CHECK (state IN ('pending', 'approving', 'approved', 'denied',
                                                            'expired', 'rejected')),
    card_id                  text NOT NULL,
    trace_id                 text,
    issuer_authorization_id  text NOT NULL,           -- the decline that opened it
    declined_minor           bigint NOT NULL,
    currency                 text NOT NULL,
    merchant_name            text NOT NULL,
    merchant_mcc             text NOT NULL,
    limit_minor              bigint NOT NULL,         -- the cap's limit when it was hit
    used_minor               bigint NOT NULL,         -- spent + held then
    raise_minor              bigint NOT NULL,         -- what Approve adds (the wallet's step)
    declines_seen            integer NOT NULL DEFAULT 1,
    channel                  text NOT NULL,           -- as configured: a name or an id
    context                  jsonb NOT NULL,          -- what the message shows (services/notifier/messages.py)
    message_channel          text,                    -- the channel id Slack answered with
    message_ts               text,                    -- set once chat.postMessage succeeded
    opened_at                timestamptz NOT NULL DEFAULT now(),
    decided_by               text,
    decided_at               timestamptz,
    new_limit_minor          bigint,
    note                     text                     -- why it was rejected, say
);
-- One open (or denied) request per wallet, cap and window: an agent in a retry loop asks once.
-- After an approval the raised cap may be hit again, and that is worth asking about.
CREATE UNIQUE INDEX requests_one_per_window ON notifier.requests (wallet_id, cap, scope_id, window_key)
    WHERE state IN ('pending', 'approving', 'denied');
CREATE INDEX requests_pending_until ON notifier.requests (window_ends_at) WHERE state IN ('pending', 'approving');

-- Slack calls owed, delivered in id order per request, retried with backoff until they succeed.
CREATE TABLE notifier.slack_outbox (
    id               bigserial PRIMARY KEY,
    request_id       uuid NOT NULL REFERENCES notifier.requests,
    method           text NOT NULL CHECK (method IN ('chat.postMessage', 'chat.update', 'chat.postEphemeral')),
    payload          jsonb NOT NULL,
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    delivered_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX slack_outbox_due ON notifier.slack_outbox (next_attempt_at) WHERE delivered_at IS NULL;

-- Every verified click, once: Slack's action timestamp and the user make a replay evident.
CREATE TABLE notifier.clicks (
    request_id   uuid NOT NULL,
    user_id      text NOT NULL,
    action_ts    text NOT NULL,
    action       text NOT NULL,
    outcome      text NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (request_id, user_id, action_ts)
);
