-- The gateway's record of every answer it gave an issuer, by issuer and authorization id: a retried
-- webhook gets the same answer again, and answers the authorizer never made (an unknown card, the
-- deadline passed, the system unavailable) are recorded too.

CREATE SCHEMA IF NOT EXISTS gateway;

CREATE TABLE gateway.answers (
    issuer                   text NOT NULL,
    issuer_authorization_id  text NOT NULL,
    card_token               text NOT NULL,
    wallet_id                text,
    card_id                  text,
    approved                 boolean NOT NULL,
    reason                   text NOT NULL,
    answered_by              text NOT NULL CHECK (answered_by IN ('authorizer', 'gateway')),
    amount_minor             bigint NOT NULL CHECK (amount_minor >= 0),
    currency                 char(3) NOT NULL,
    answered_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (issuer, issuer_authorization_id)
);
CREATE INDEX answers_wallet ON gateway.answers (wallet_id, answered_at);
