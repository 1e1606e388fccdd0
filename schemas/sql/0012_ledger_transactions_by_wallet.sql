-- ledger.transactions, the same rows and columns, written so that a filter on `wallet_id` reaches
-- the tables. The view joined the decisions to every authorization's movements with a FULL JOIN and
-- exposed `coalesce(d.wallet_id, m.wallet_id)`, which Postgres cannot push a filter through: the
-- notifier's "last five transactions of this wallet" aggregated the movements of every wallet
-- (366 ms at 400,000 entries, growing with the ledger). Now the decisions, each with its movements,
-- and the movements of authorizations no decision names are two branches of a UNION ALL, each
-- exposing its own table's wallet_id; the movements are grouped by wallet too (an authorization's
-- events all carry its wallet, the Kafka key), so the filter also reaches their aggregate.
CREATE OR REPLACE VIEW ledger.transactions AS
WITH moved AS NOT MATERIALIZED (  -- inlined in both branches, so each pushes its filter in
    SELECT wallet_id, issuer, issuer_authorization_id,
           sum(spent_minor) FILTER (WHERE source_type = 'authorization_cleared') AS captured_minor,
           sum(hold_released_minor) FILTER (WHERE source_type = 'authorization_reversed') AS reversed_minor,
           sum(hold_released_minor) FILTER (WHERE source_type = 'authorization_expired') AS expired_minor,
           -sum(spent_minor) FILTER (WHERE source_type = 'refund_posted') AS refunded_minor,
           sum(hold_released_minor) AS released_minor,
           max(occurred_at) AS last_event_at,
           min(card_id) AS card_id, min(trace_id) AS trace_id,
           min(currency) AS currency
    FROM ledger.entries
    WHERE kind = 'money_moved' AND issuer_authorization_id IS NOT NULL
    GROUP BY wallet_id, issuer, issuer_authorization_id
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
           d.held_minor,
           coalesce(m.captured_minor, 0) AS captured_minor,
           coalesce(m.reversed_minor, 0) AS reversed_minor,
           coalesce(m.expired_minor, 0) AS expired_minor,
           coalesce(m.refunded_minor, 0) AS refunded_minor,
           greatest(d.held_minor - coalesce(m.released_minor, 0), 0) AS open_hold_minor,
           coalesce(m.last_event_at, d.occurred_at) AS last_event_at
    FROM ledger.entries d
    LEFT JOIN moved m
           ON m.wallet_id = d.wallet_id AND m.issuer = d.issuer
          AND m.issuer_authorization_id = d.issuer_authorization_id
    WHERE d.kind = 'decision'
    UNION ALL
    SELECT m.issuer, m.issuer_authorization_id, NULL::text, m.wallet_id, m.card_id, m.trace_id,
           NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, m.currency, NULL, NULL, NULL, NULL, NULL,
           0, coalesce(m.captured_minor, 0), coalesce(m.reversed_minor, 0), coalesce(m.expired_minor, 0),
           coalesce(m.refunded_minor, 0), 0, m.last_event_at
    FROM moved m
    WHERE NOT EXISTS (
        SELECT 1 FROM ledger.entries d
         WHERE d.kind = 'decision' AND d.wallet_id = m.wallet_id AND d.issuer = m.issuer
           AND d.issuer_authorization_id = m.issuer_authorization_id
    )
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
