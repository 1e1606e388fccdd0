-- The ledger: an append-only, double-entry journal of every movement of money, by trace id, and
-- the views people query (docs/sql.md). Written only by services/ledger. See decision 0007.
--
-- Accounts, all in the wallet's (caps') currency:
--   available  per card: funded amount minus holds minus spend (negative on an unfunded card:
--              what it has consumed)
--   held       per card: open holds
--   spent      per card: money gone (refunds negative)
--   issuer_settlement  per wallet and issuer: the counter-account of money loaded onto cards
-- Every entry's postings sum to zero per currency (enforced below, per statement).

CREATE SCHEMA IF NOT EXISTS ledger;

CREATE TABLE ledger.wallets (
    wallet_id   text PRIMARY KEY,
    label       text NOT NULL,
    currency    text NOT NULL,
    time_zone   text NOT NULL,
    created_at  timestamptz NOT NULL
);

CREATE TABLE ledger.cards (
    card_id            text PRIMARY KEY,
    wallet_id          text NOT NULL,
    label              text NOT NULL,
    issuer             text NOT NULL,
    issuer_card_token  text NOT NULL,
    last4              text NOT NULL,
    funded_minor       bigint,
    currency           text,                            -- the funded amount's; NULL: the wallet's
    created_at         timestamptz NOT NULL
);

-- One row per source event: a decision (approved or declined), a movement the authorizer counted
-- (clearing, reversal, expiry, refund, force-post), or a card's funding.
CREATE TABLE ledger.entries (
    entry_id                 uuid PRIMARY KEY,          -- the source event's id: a redelivery changes nothing
    kind                     text NOT NULL CHECK (kind IN ('decision', 'money_moved', 'card_funded')),
    source_type              text NOT NULL,             -- authorization_decided, authorization_cleared, ...
    wallet_id                text NOT NULL,
    card_id                  text NOT NULL,
    trace_id                 text,
    issuer                   text NOT NULL,
    issuer_authorization_id  text,
    issuer_transaction_id    text,
    merchant_name            text,
    merchant_mcc             text,
    merchant_network_id      text,
    merchant_country         text,
    amount_minor             bigint,                    -- as the issuer asked or reported (card currency)
    amount_currency          text,
    merchant_amount_minor    bigint,                    -- in the merchant's currency
    merchant_currency        text,
    currency                 text NOT NULL,             -- the caps' currency of the four amounts below
    cap_amount_minor         bigint,                    -- a decision's amount in the caps' currency
    held_minor               bigint NOT NULL DEFAULT 0, -- hold placed (approval)
    hold_released_minor      bigint NOT NULL DEFAULT 0,
    spent_minor              bigint NOT NULL DEFAULT 0, -- negative: refund
    approved                 boolean,                   -- decisions only
    reason                   text,
    failed_cap               text,
    occurred_at              timestamptz NOT NULL,      -- when it happened (decided, cleared, ...)
    counted_at               timestamptz NOT NULL,      -- when the spend counts (a clearing: its hold's time)
    recorded_at              timestamptz NOT NULL DEFAULT now()
);
-- The first decision of an authorization is the only one (the authorizer answers a retry with it).
CREATE UNIQUE INDEX entries_one_decision ON ledger.entries (issuer, issuer_authorization_id)
    WHERE kind = 'decision';
CREATE INDEX entries_authorization ON ledger.entries (issuer, issuer_authorization_id);
CREATE INDEX entries_trace ON ledger.entries (trace_id) WHERE trace_id IS NOT NULL;
CREATE INDEX entries_card ON ledger.entries (card_id, occurred_at);
CREATE INDEX entries_wallet ON ledger.entries (wallet_id, counted_at);

CREATE TABLE ledger.postings (
    posting_id   bigserial PRIMARY KEY,
    entry_id     uuid NOT NULL REFERENCES ledger.entries,
    account      text NOT NULL CHECK (account IN ('available', 'held', 'spent', 'issuer_settlement')),
    wallet_id    text NOT NULL,
    card_id      text,                                  -- NULL for issuer_settlement
    issuer       text NOT NULL,
    trace_id     text,
    amount_minor bigint NOT NULL,                       -- signed: debit positive, credit negative
    currency     text NOT NULL,
    occurred_at  timestamptz NOT NULL
);
CREATE INDEX postings_entry ON ledger.postings (entry_id);
CREATE INDEX postings_card ON ledger.postings (card_id, account);

-- What the issuer reported on issuer.events, as it came (also for wallets the authorizer does not
-- know, whose events move no money it counts).
CREATE TABLE ledger.issuer_reports (
    event_id                 uuid PRIMARY KEY,
    type                     text NOT NULL,
    wallet_id                text NOT NULL,
    card_id                  text NOT NULL,
    issuer                   text NOT NULL,
    issuer_authorization_id  text,
    issuer_transaction_id    text,
    amount_minor             bigint,
    currency                 text,
    occurred_at              timestamptz NOT NULL,
    payload                  jsonb NOT NULL,
    recorded_at              timestamptz NOT NULL DEFAULT now()
);

-- Append-only: the journal is corrected by new entries, never edited.
CREATE FUNCTION ledger.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger.% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE ON ledger.entries
    FOR EACH ROW EXECUTE FUNCTION ledger.refuse_change();
CREATE TRIGGER postings_append_only BEFORE UPDATE OR DELETE ON ledger.postings
    FOR EACH ROW EXECUTE FUNCTION ledger.refuse_change();

-- Double entry: each statement's postings sum to zero per entry and currency. The service writes
-- all legs of a batch in one statement, so an unbalanced entry can never be committed.
CREATE FUNCTION ledger.check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    unbalanced uuid;
BEGIN
    SELECT entry_id INTO unbalanced FROM inserted GROUP BY entry_id, currency HAVING sum(amount_minor) <> 0 LIMIT 1;
    IF unbalanced IS NOT NULL THEN
        RAISE EXCEPTION 'ledger entry % does not balance', unbalanced USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER postings_balanced AFTER INSERT ON ledger.postings
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION ledger.check_balanced();

-- ───────────────────────────── views for people (docs/sql.md) ─────────────────────────────

-- Where a movement's merchant is not on it (a clearing), it is the decision's.
CREATE VIEW ledger.movements AS
SELECT e.entry_id, e.kind, e.source_type, e.wallet_id, e.card_id, e.trace_id, e.issuer,
       e.issuer_authorization_id, e.issuer_transaction_id,
       coalesce(e.merchant_name, d.merchant_name) AS merchant_name,
       coalesce(e.merchant_mcc, d.merchant_mcc) AS merchant_mcc,
       coalesce(e.merchant_network_id, d.merchant_network_id) AS merchant_network_id,
       coalesce(e.merchant_country, d.merchant_country) AS merchant_country,
       e.currency, e.held_minor, e.hold_released_minor, e.spent_minor, e.occurred_at, e.counted_at
FROM ledger.entries e
LEFT JOIN ledger.entries d
       ON d.kind = 'decision' AND e.kind = 'money_moved'
      AND d.issuer = e.issuer AND d.issuer_authorization_id = e.issuer_authorization_id;

CREATE VIEW ledger.transactions AS
WITH moved AS (
    SELECT issuer, issuer_authorization_id,
           sum(spent_minor) FILTER (WHERE source_type = 'authorization_cleared') AS captured_minor,
           sum(hold_released_minor) FILTER (WHERE source_type = 'authorization_reversed') AS reversed_minor,
           sum(hold_released_minor) FILTER (WHERE source_type = 'authorization_expired') AS expired_minor,
           -sum(spent_minor) FILTER (WHERE source_type = 'refund_posted') AS refunded_minor,
           sum(hold_released_minor) AS released_minor,
           max(occurred_at) AS last_event_at,
           min(card_id) AS card_id, min(wallet_id) AS wallet_id, min(trace_id) AS trace_id,
           min(currency) AS currency
    FROM ledger.entries
    WHERE kind = 'money_moved' AND issuer_authorization_id IS NOT NULL
    GROUP BY issuer, issuer_authorization_id
), lifecycles AS (
    SELECT coalesce(d.issuer, m.issuer) AS issuer,
           coalesce(d.issuer_authorization_id, m.issuer_authorization_id) AS authorization_id,
           NULL::text AS transaction_id,
           coalesce(d.wallet_id, m.wallet_id) AS wallet_id,
           coalesce(d.card_id, m.card_id) AS card_id,
           coalesce(d.trace_id, m.trace_id) AS trace_id,
           d.merchant_name, d.merchant_mcc, d.merchant_network_id, d.merchant_country,
           d.amount_minor AS requested_minor, d.amount_currency AS requested_currency,
           d.merchant_amount_minor, d.merchant_currency,
           coalesce(d.currency, m.currency) AS currency,
           d.cap_amount_minor,
           d.approved, d.reason, d.failed_cap,
           d.occurred_at AS decided_at,
           coalesce(d.held_minor, 0) AS held_minor,
           coalesce(m.captured_minor, 0) AS captured_minor,
           coalesce(m.reversed_minor, 0) AS reversed_minor,
           coalesce(m.expired_minor, 0) AS expired_minor,
           coalesce(m.refunded_minor, 0) AS refunded_minor,
           greatest(coalesce(d.held_minor, 0) - coalesce(m.released_minor, 0), 0) AS open_hold_minor,
           coalesce(m.last_event_at, d.occurred_at) AS last_event_at
    FROM (SELECT * FROM ledger.entries WHERE kind = 'decision') d
    FULL JOIN moved m ON m.issuer = d.issuer AND m.issuer_authorization_id = d.issuer_authorization_id
    UNION ALL
    SELECT issuer, NULL, issuer_transaction_id, wallet_id, card_id, trace_id,
           merchant_name, merchant_mcc, merchant_network_id, merchant_country,
           amount_minor, amount_currency, merchant_amount_minor, merchant_currency, currency,
           NULL, NULL, NULL, NULL, NULL, 0, spent_minor, 0, 0, 0, 0, occurred_at
    FROM ledger.entries
    WHERE kind = 'money_moved' AND source_type = 'force_posted'
)
SELECT *,
       captured_minor - refunded_minor AS final_minor,
       CASE
           WHEN approved IS FALSE THEN 'declined'
           WHEN authorization_id IS NULL THEN 'force_posted'
           WHEN approved IS NULL THEN 'captured_without_decision'
           WHEN refunded_minor > 0 AND refunded_minor >= captured_minor THEN 'refunded'
           WHEN refunded_minor > 0 THEN 'partially_refunded'
           WHEN captured_minor > 0 AND open_hold_minor > 0 THEN 'partially_captured'
           WHEN captured_minor > 0 THEN 'captured'
           WHEN open_hold_minor > 0 THEN 'held'
           WHEN expired_minor > 0 THEN 'expired'
           ELSE 'reversed'
       END AS status
FROM lifecycles;

CREATE VIEW ledger.spend_by_trace AS
SELECT wallet_id, trace_id, currency,
       sum(spent_minor) AS spent_minor,
       sum(held_minor) - sum(hold_released_minor) AS held_minor,
       count(*) FILTER (WHERE kind = 'decision') AS authorizations,
       count(*) FILTER (WHERE kind = 'decision' AND approved) AS approvals,
       count(*) FILTER (WHERE kind = 'decision' AND NOT approved) AS declines,
       min(occurred_at) AS first_at,
       max(occurred_at) AS last_at
FROM ledger.entries
WHERE trace_id IS NOT NULL AND kind <> 'card_funded'
GROUP BY wallet_id, trace_id, currency;

CREATE VIEW ledger.spend_by_wallet_day AS
SELECT e.wallet_id, (e.counted_at AT TIME ZONE coalesce(w.time_zone, 'UTC'))::date AS day, e.currency,
       sum(e.spent_minor) FILTER (WHERE e.spent_minor > 0) AS spent_minor,
       coalesce(-sum(e.spent_minor) FILTER (WHERE e.spent_minor < 0), 0) AS refunded_minor,
       sum(e.spent_minor) AS net_minor,
       count(*) AS movements
FROM ledger.entries e
LEFT JOIN ledger.wallets w USING (wallet_id)
WHERE e.kind = 'money_moved' AND e.spent_minor <> 0
GROUP BY 1, 2, 3;

CREATE VIEW ledger.spend_by_merchant AS
SELECT wallet_id, merchant_name, merchant_mcc, merchant_network_id, merchant_country, currency,
       sum(spent_minor) AS spent_minor,
       count(*) FILTER (WHERE spent_minor > 0) AS purchases,
       max(counted_at) AS last_at
FROM ledger.movements
WHERE kind = 'money_moved' AND spent_minor <> 0
GROUP BY wallet_id, merchant_name, merchant_mcc, merchant_network_id, merchant_country, currency;

CREATE VIEW ledger.declines_by_reason AS
SELECT wallet_id, reason, failed_cap, currency,
       count(*) AS declines,
       sum(coalesce(cap_amount_minor, amount_minor)) AS declined_minor,
       min(occurred_at) AS first_at,
       max(occurred_at) AS last_at
FROM ledger.entries
WHERE kind = 'decision' AND NOT approved
GROUP BY wallet_id, reason, failed_cap, currency;

CREATE VIEW ledger.card_balances AS
SELECT c.card_id, c.wallet_id, c.label, c.issuer, c.last4, coalesce(c.currency, w.currency) AS currency,
       c.funded_minor,
       coalesce(sum(p.amount_minor) FILTER (WHERE p.account = 'available'), 0) AS available_minor,
       coalesce(sum(p.amount_minor) FILTER (WHERE p.account = 'held'), 0) AS held_minor,
       coalesce(sum(p.amount_minor) FILTER (WHERE p.account = 'spent'), 0) AS spent_minor
FROM ledger.cards c
LEFT JOIN ledger.wallets w USING (wallet_id)
LEFT JOIN ledger.postings p ON p.card_id = c.card_id
GROUP BY c.card_id, w.currency;

CREATE VIEW ledger.cost_per_task AS
SELECT t.wallet_id, t.trace_id, t.currency, t.spent_minor, t.held_minor, t.authorizations, t.approvals,
       t.declines, t.first_at, t.last_at,
       count(*) OVER wallet AS traces_in_wallet,
       round(avg(t.spent_minor) OVER wallet, 2) AS wallet_mean_spent_minor,
       round(coalesce(var_samp(t.spent_minor) OVER wallet, 0), 2) AS wallet_variance_spent_minor,
       round(coalesce(stddev_samp(t.spent_minor) OVER wallet, 0), 2) AS wallet_stddev_spent_minor
FROM ledger.spend_by_trace t
WINDOW wallet AS (PARTITION BY t.wallet_id, t.currency);

-- Read-only access for people and BI tools: the views, nothing else. A role without login; grant it
-- to a login role (`GRANT pursestrings_reader TO alice`). Roles are cluster-wide: created once.
DO $$
BEGIN
    CREATE ROLE pursestrings_reader NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END $$;
GRANT USAGE ON SCHEMA ledger TO pursestrings_reader;
GRANT SELECT ON ledger.movements, ledger.transactions, ledger.spend_by_trace, ledger.spend_by_wallet_day,
    ledger.spend_by_merchant, ledger.declines_by_reason, ledger.card_balances, ledger.cost_per_task
    TO pursestrings_reader;
