-- commit_batch_packed (migration 0019) with its number, flag, time and id columns packed too: every
-- column but the payloads and snapshots comes as one text, its elements separated by U+001F, U+001E
-- standing for NULL (0019's `unpack_text`), then cast. The client library encodes an array element by
-- element, each checked against Python's abstract base classes: ~0.8 us of the authorizer's CPU per
-- timestamp and ~0.4 us per integer or flag, and an approved decision has three timestamps, three
-- integers and a flag. Packed, a timestamp costs the client ~0.2 us (its ISO text, worked out once
-- per distinct instant in a batch: most are the batch's `now` and `now` + 7 days) and Postgres
-- ~0.25 us more to parse (issue 20, decision 0005).
--
-- Times are packed with their UTC offset ("2026-12-05T14:00:00.123456+00:00"), so the session's
-- TimeZone does not change what they mean; integers as digits; flags as t / f; ids as text.
--
-- A wrapper of the 0019 wrapper, which stays for instances of the previous release during a rolling
-- deploy; plpgsql, planned once per connection.
CREATE FUNCTION authorizer.commit_batch_all_packed(
    p_group text,
    o_topics text, o_partitions text, o_epochs text, o_next text,
    s_wallets text, s_states jsonb[], s_expiry text,
    hd_wallets text, hd_auths text,
    h_wallets text, h_auths text, h_cards text, h_traces text, h_amounts text,
    h_placed text, h_expires text,
    po_wallets text, po_ids text, po_at text, po_cards text, po_traces text, po_amounts text,
    d_ids text, d_wallets text, d_approved text, d_reasons text, d_payloads text[], d_at text,
    d_cards text, d_traces text,
    ob_topics text, ob_keys text, ob_events text, ob_payloads text[], ob_decisions text,
    a_events text, a_wallets text,
    published text
) RETURNS bigint[]
LANGUAGE plpgsql AS $$
BEGIN
    RETURN authorizer.commit_batch_packed(
        p_group,
        o_topics, authorizer.unpack_text(o_partitions)::integer[], authorizer.unpack_text(o_epochs)::bigint[],
        authorizer.unpack_text(o_next)::bigint[],
        s_wallets, s_states, authorizer.unpack_text(s_expiry)::timestamptz[],
        hd_wallets, hd_auths,
        h_wallets, h_auths, h_cards, h_traces, authorizer.unpack_text(h_amounts)::bigint[],
        authorizer.unpack_text(h_placed)::timestamptz[], authorizer.unpack_text(h_expires)::timestamptz[],
        po_wallets, po_ids, authorizer.unpack_text(po_at)::timestamptz[], po_cards, po_traces,
        authorizer.unpack_text(po_amounts)::bigint[],
        d_ids, d_wallets, authorizer.unpack_text(d_approved)::boolean[], d_reasons, d_payloads,
        authorizer.unpack_text(d_at)::timestamptz[], d_cards, d_traces,
        ob_topics, ob_keys, ob_events, ob_payloads, authorizer.unpack_text(ob_decisions)::integer[],
        authorizer.unpack_text(a_events)::uuid[], a_wallets,
        authorizer.unpack_text(published)::bigint[]
    );
END
$$;
