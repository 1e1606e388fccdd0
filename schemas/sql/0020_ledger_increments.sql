-- Incremental authorizations (issue 21): an increment is decided on its own id and, approved, grows
-- the hold of the authorization it adds to (AuthorizationDecided version 2, `increment_of`). The
-- journal keeps which authorization each increment's decision belongs to, and ledger.transactions
-- shows one row per authorization with its increments folded in: `held_minor` and `open_hold_minor`
-- count what approved increments added, and two new last columns say how many increments were asked
-- (`increments`, declined ones too) and what the approved ones added (`incremented_minor`). An
-- increment is not a row of its own. Otherwise as migration 0014.
ALTER TABLE ledger.entries ADD COLUMN increment_of text;
CREATE INDEX entries_increments ON ledger.entries (wallet_id, issuer, increment_of) WHERE increment_of IS NOT NULL;

CREATE OR REPLACE VIEW ledger.transactions AS
WITH moved AS NOT MATERIALIZED (  -- inlined in both branches, so each pushes its filter in
    SELECT wallet_id, issuer, issuer_authorization_id,
           sum(spent_minor) FILTER (WHERE source_type = 'authorization_cleared') AS captured_minor,
           sum(hold_released_minor) FILTER (WHERE source_type = 'authorization_reversed') AS reversed_minor,
           sum(hold_released_minor) FILTER (WHERE source_type = 'authorization_expired') AS expired_minor,
           -sum(spent_minor) FILTER (WHERE source_type = 'refund_posted') AS refunded_minor,
           sum(hold_released_minor) AS released_minor,
           sum(held_minor)::bigint AS placed_minor,
           -- what the issuer approved without us (its request), for a row no decision names
           min(amount_minor) FILTER (WHERE source_type = 'authorization_approved_by_issuer') AS approved_minor,
           min(amount_currency) FILTER (WHERE source_type = 'authorization_approved_by_issuer') AS approved_currency,
           min(merchant_name) AS merchant_name, min(merchant_mcc) AS merchant_mcc,
           min(merchant_network_id) AS merchant_network_id, min(merchant_country) AS merchant_country,
           max(occurred_at) AS last_event_at,
           min(card_id) AS card_id, min(trace_id) AS trace_id,
           min(currency) AS currency
    FROM ledger.entries
    WHERE kind = 'money_moved' AND issuer_authorization_id IS NOT NULL
    GROUP BY wallet_id, issuer, issuer_authorization_id
), increments AS NOT MATERIALIZED (  -- the increments asked on each authorization, and what they added
    SELECT wallet_id, issuer, increment_of, count(*) AS asked, sum(held_minor)::bigint AS incremented_minor
    FROM ledger.entries
    WHERE kind = 'decision' AND increment_of IS NOT NULL
    GROUP BY wallet_id, issuer, increment_of
), lifecycles AS (
    SELECT d.issuer, d.issuer_authorization_id AS authorization_id, NULL::text AS transaction_id,
           d.wallet_id, d.card_id, coalesce(d.trace_id, m.trace_id) AS trace_id,
           d.merchant_name, d.merchant_mcc, d.merchant_network_id, d.merchant_country,
           d.amount_minor AS requested_minor, d.amount_currency AS requested_currency,
           d.merchant_amount_minor, d.merchant_currency,
           d.currency,
           d.cap_amount_minor,
           d.approved, d.reason, d.failed_cap,
           d.occurred_at AS decided_at,
           d.held_minor + coalesce(i.incremented_minor, 0) + coalesce(m.placed_minor, 0) AS held_minor,
           coalesce(m.captured_minor, 0) AS captured_minor,
           coalesce(m.reversed_minor, 0) AS reversed_minor,
           coalesce(m.expired_minor, 0) AS expired_minor,
           coalesce(m.refunded_minor, 0) AS refunded_minor,
           greatest(d.held_minor + coalesce(i.incremented_minor, 0) + coalesce(m.placed_minor, 0)
                    - coalesce(m.released_minor, 0), 0) AS open_hold_minor,
           coalesce(m.last_event_at, d.occurred_at) AS last_event_at,
           coalesce(m.placed_minor, 0) AS held_by_issuer_minor,
           coalesce(i.asked, 0) AS increments,
           coalesce(i.incremented_minor, 0) AS incremented_minor
    FROM ledger.entries d
    LEFT JOIN moved m
           ON m.wallet_id = d.wallet_id AND m.issuer = d.issuer
          AND m.issuer_authorization_id = d.issuer_authorization_id
    LEFT JOIN increments i
           ON i.wallet_id = d.wallet_id AND i.issuer = d.issuer AND i.increment_of = d.issuer_authorization_id
    WHERE d.kind = 'decision' AND d.increment_of IS NULL
    UNION ALL
    SELECT m.issuer, m.issuer_authorization_id, NULL::text, m.wallet_id, m.card_id, m.trace_id,
           m.merchant_name, m.merchant_mcc, m.merchant_network_id, m.merchant_country,
           m.approved_minor, m.approved_currency, NULL, NULL, m.currency, NULL, NULL, NULL, NULL, NULL,
           coalesce(m.placed_minor, 0) + coalesce(i.incremented_minor, 0), coalesce(m.captured_minor, 0),
           coalesce(m.reversed_minor, 0), coalesce(m.expired_minor, 0), coalesce(m.refunded_minor, 0),
           greatest(coalesce(m.placed_minor, 0) + coalesce(i.incremented_minor, 0) - coalesce(m.released_minor, 0), 0),
           m.last_event_at, coalesce(m.placed_minor, 0), coalesce(i.asked, 0), coalesce(i.incremented_minor, 0)
    FROM moved m
    LEFT JOIN increments i
           ON i.wallet_id = m.wallet_id AND i.issuer = m.issuer AND i.increment_of = m.issuer_authorization_id
    WHERE NOT EXISTS (
        SELECT 1 FROM ledger.entries d
         WHERE d.kind = 'decision' AND d.wallet_id = m.wallet_id AND d.issuer = m.issuer
           AND d.issuer_authorization_id = m.issuer_authorization_id
    )
    UNION ALL
    SELECT issuer, NULL, issuer_transaction_id, wallet_id, card_id, trace_id,
           merchant_name, merchant_mcc, merchant_network_id, merchant_country,
           amount_minor, amount_currency, merchant_amount_minor, merchant_currency, currency,
           NULL, NULL, NULL, NULL, NULL, 0, spent_minor, 0, 0, 0, 0, occurred_at, 0, 0, 0
    FROM ledger.entries
    WHERE kind = 'money_moved' AND source_type = 'force_posted'
)
SELECT issuer, authorization_id, transaction_id, wallet_id, card_id, trace_id,
       merchant_name, merchant_mcc, merchant_network_id, merchant_country,
       requested_minor, requested_currency, merchant_amount_minor, merchant_currency, currency,
       cap_amount_minor, approved, reason, failed_cap, decided_at, held_minor,
       captured_minor, reversed_minor, expired_minor, refunded_minor, open_hold_minor, last_event_at,
       captured_minor - refunded_minor AS final_minor,
       CASE
           WHEN approved IS FALSE AND held_by_issuer_minor = 0 THEN 'declined'
           WHEN authorization_id IS NULL THEN 'force_posted'
           WHEN approved IS NULL AND held_by_issuer_minor = 0 THEN 'captured_without_decision'
           WHEN refunded_minor > 0 AND refunded_minor >= captured_minor THEN 'refunded'
           WHEN refunded_minor > 0 THEN 'partially_refunded'
           WHEN captured_minor > 0 AND open_hold_minor > 0 THEN 'partially_captured'
           WHEN captured_minor > 0 THEN 'captured'
           WHEN open_hold_minor > 0 THEN 'held'
           WHEN expired_minor > 0 THEN 'expired'
           ELSE 'reversed'
       END AS status,
       held_by_issuer_minor,
       increments,
       incremented_minor
FROM lifecycles;
