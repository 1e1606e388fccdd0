-- commit_batch as in migration 0013, with each decision's JSON passed once: the outbox row of a
-- decision names it (`ob_decisions`, 1-based in the d_ arrays) instead of repeating its payload, so
-- a batch sends each decision's ~2-4 KB once (the client encoded it twice: ~3 us of the
-- authorizer's CPU a decision, issue 20). The rows are inserted in the order given, as before.
--
-- A new overload (one array more): the 0013 function stays for instances not yet upgraded.
CREATE FUNCTION authorizer.commit_batch(
    p_group text,
    -- partitions: the epochs we hold, and the next offsets to record
    o_topics text[], o_partitions integer[], o_epochs bigint[], o_next bigint[],
    -- wallet snapshots
    s_wallets text[], s_states jsonb[], s_expiry timestamptz[],
    -- holds released, holds placed or changed
    hd_wallets text[], hd_auths text[],
    h_wallets text[], h_auths text[], h_cards text[], h_traces text[], h_amounts bigint[],
    h_placed timestamptz[], h_expires timestamptz[],
    -- postings
    po_wallets text[], po_ids text[], po_at timestamptz[], po_cards text[], po_traces text[], po_amounts bigint[],
    -- decisions
    d_ids text[], d_wallets text[], d_approved boolean[], d_reasons text[], d_payloads text[], d_at timestamptz[],
    d_cards text[], d_traces text[],
    -- outbox rows, in publishing order; a decision's row names its decision (1-based, in the d_ arrays)
    -- and carries no payload of its own: it is the decision's
    ob_topics text[], ob_keys text[], ob_events uuid[], ob_payloads text[], ob_decisions integer[],
    -- issuer events applied
    a_events uuid[], a_wallets text[],
    -- outbox rows the previous batch's acks confirmed
    published bigint[]
) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    fenced text;
    ids bigint[];
BEGIN
    -- Lock the batch's partitions' rows in a fixed order, then refuse if any epoch moved on.
    PERFORM 1 FROM authorizer.partition_offsets p
        JOIN unnest(o_topics, o_partitions) AS o (topic, partition)
          ON p.topic = o.topic AND p.partition = o.partition
        WHERE p.consumer_group = p_group
        ORDER BY p.topic, p.partition
        FOR UPDATE OF p;
    SELECT format('%s[%s] is at epoch %s, we hold %s', o.topic, o.partition, coalesce(p.epoch::text, 'none'),
                  coalesce(o.epoch::text, 'none'))
      INTO fenced
      FROM unnest(o_topics, o_partitions, o_epochs) AS o (topic, partition, epoch)
      LEFT JOIN authorizer.partition_offsets p
        ON p.consumer_group = p_group AND p.topic = o.topic AND p.partition = o.partition
     WHERE p.epoch IS DISTINCT FROM o.epoch OR o.epoch IS NULL
     ORDER BY o.topic, o.partition
     LIMIT 1;
    IF fenced IS NOT NULL THEN
        RAISE EXCEPTION '%', fenced USING ERRCODE = 'PSF01';
    END IF;

    INSERT INTO authorizer.wallet_state (wallet_id, state, earliest_hold_expiry)
        SELECT * FROM unnest(s_wallets, s_states, s_expiry)
        ON CONFLICT (wallet_id) DO UPDATE
        SET state = EXCLUDED.state, earliest_hold_expiry = EXCLUDED.earliest_hold_expiry, updated_at = now();
    IF cardinality(hd_wallets) > 0 THEN
        DELETE FROM authorizer.holds h USING unnest(hd_wallets, hd_auths) AS d (wallet_id, authorization_id)
         WHERE h.wallet_id = d.wallet_id AND h.authorization_id = d.authorization_id;
    END IF;
    IF cardinality(h_wallets) > 0 THEN
        INSERT INTO authorizer.holds
            SELECT * FROM unnest(h_wallets, h_auths, h_cards, h_traces, h_amounts, h_placed, h_expires)
            ON CONFLICT (wallet_id, authorization_id) DO UPDATE SET amount_minor = EXCLUDED.amount_minor;
    END IF;
    IF cardinality(po_wallets) > 0 THEN
        INSERT INTO authorizer.postings
            SELECT * FROM unnest(po_wallets, po_ids, po_at, po_cards, po_traces, po_amounts);
    END IF;
    IF cardinality(d_ids) > 0 THEN
        INSERT INTO authorizer.decisions (issuer_authorization_id, wallet_id, approved, reason, decision, decided_at,
                                          card_id, trace_id)
            SELECT * FROM unnest(d_ids, d_wallets, d_approved, d_reasons, d_payloads, d_at, d_cards, d_traces)
            ON CONFLICT (issuer_authorization_id) DO NOTHING;
    END IF;
    -- Identity values are assigned in insertion order, and the rows are inserted in the order given
    -- (by their position): the ids, sorted, are the rows' ids in that order.
    WITH inserted AS (
        INSERT INTO authorizer.outbox (topic, message_key, event_id, payload)
            SELECT o.topic, o.message_key, o.event_id, coalesce(o.payload, d.payload)
              FROM unnest(ob_topics, ob_keys, ob_events, ob_payloads, ob_decisions)
                   WITH ORDINALITY AS o (topic, message_key, event_id, payload, decision, position)
              LEFT JOIN unnest(d_payloads) WITH ORDINALITY AS d (payload, position) ON d.position = o.decision
             ORDER BY o.position
            RETURNING outbox_id
    )
    SELECT coalesce(array_agg(outbox_id ORDER BY outbox_id), '{}') INTO ids FROM inserted;
    IF cardinality(a_events) > 0 THEN
        INSERT INTO authorizer.applied_events (event_id, wallet_id) SELECT * FROM unnest(a_events, a_wallets);
    END IF;
    IF cardinality(published) > 0 THEN
        UPDATE authorizer.outbox SET published_at = now() WHERE outbox_id = ANY(published);
    END IF;
    UPDATE authorizer.partition_offsets AS p SET next_offset = o.next_offset, updated_at = now()
      FROM unnest(o_topics, o_partitions, o_next) AS o (topic, partition, next_offset)
     WHERE p.consumer_group = p_group AND p.topic = o.topic AND p.partition = o.partition;
    RETURN ids;
END
$$;
