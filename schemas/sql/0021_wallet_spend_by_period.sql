-- Weekly, yearly and all-time caps (issue 21, decision 0011): a wallet's snapshot kept its spend by
-- calendar month as "monthly": {"<scope>@YYYY-MM": n}; it now keeps it by period, then by scope,
-- as "periods": {"YYYY-MM": {"<scope>": n}, "YYYY": {...}, "YYYY-Www": {...}}, and its lifetime
-- totals gain the whole wallet's ("wallet", beside "card:<id>" and "trace:<id>").
--
-- Rewritten here for every existing snapshot: the months move as they are; each year is the sum of
-- the months the snapshot still kept (the current and the previous one: earlier months were no
-- longer known); the wallet's lifetime is the sum of its cards' (every posting counts on its card,
-- so that sum is exact). Weeks start empty: spend already counted this week is not known by week,
-- so a weekly cap set on a wallet that spent before this migration counts from here (the same for
-- a yearly cap and months before the previous one). Decision 0011 says so.
UPDATE authorizer.wallet_state AS w
SET state = (w.state - 'monthly') || jsonb_build_object(
    'periods', COALESCE((
        SELECT jsonb_object_agg(period, sums)
        FROM (
            SELECT period, jsonb_object_agg(scope, amount) AS sums
            FROM (
                SELECT split_part(m.key, '@', 2) AS period, split_part(m.key, '@', 1) AS scope,
                       sum(m.value::bigint) AS amount
                FROM jsonb_each_text(COALESCE(w.state -> 'monthly', '{}'::jsonb)) AS m
                GROUP BY 1, 2
                UNION ALL
                SELECT left(split_part(m.key, '@', 2), 4), split_part(m.key, '@', 1), sum(m.value::bigint)
                FROM jsonb_each_text(COALESCE(w.state -> 'monthly', '{}'::jsonb)) AS m
                GROUP BY 1, 2
            ) AS by_scope
            GROUP BY period
        ) AS by_period
    ), '{}'::jsonb),
    'lifetime', COALESCE(w.state -> 'lifetime', '{}'::jsonb) || jsonb_build_object(
        'wallet', (
            SELECT COALESCE(sum(l.value::bigint), 0)
            FROM jsonb_each_text(COALESCE(w.state -> 'lifetime', '{}'::jsonb)) AS l
            WHERE l.key LIKE 'card:%'
        )
    )
)
WHERE w.state ? 'monthly';
