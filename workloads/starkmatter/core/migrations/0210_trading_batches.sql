-- The order worker writes a whole batch of orders in a few statements instead of a few per
-- order: every status step of the batch in one call, every audit row in one call.

-- Steps in order, one array element per step; the steps of one order are consecutive.
-- Each step is one UPDATE, so the transition guard checks every edge exactly as
-- trading_order_advance does; a step whose order is no longer in its source state raises
-- (the worker holds the order rows locked, so that would be a bug, not a race).
CREATE FUNCTION trading_order_advance_many(
    p_orders uuid[], p_sources text[], p_targets text[], p_reasons text[], p_details jsonb[],
    p_ts_event timestamptz
) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    i integer;
    n integer := coalesce(array_length(p_orders, 1), 0);
    now_ts timestamptz := clock_timestamp();
BEGIN
    IF n <> coalesce(array_length(p_sources, 1), 0) OR n <> coalesce(array_length(p_targets, 1), 0)
       OR n <> coalesce(array_length(p_reasons, 1), 0)
       OR n <> coalesce(array_length(p_details, 1), 0) THEN
        RAISE EXCEPTION 'trading_order_advance_many: arrays of different lengths';
    END IF;
    FOR i IN 1 .. n LOOP
        UPDATE trading_orders SET status = p_targets[i], updated_at = now_ts
            WHERE id = p_orders[i] AND status = p_sources[i];
        IF NOT FOUND THEN
            RAISE EXCEPTION 'order % is not % as expected', p_orders[i], p_sources[i]
                USING ERRCODE = 'serialization_failure';
        END IF;
    END LOOP;
    INSERT INTO trading_order_events (order_id, source, target, reason, details, ts_event,
                                      ts_init)
        SELECT o, s, t, r, d, p_ts_event, now_ts
        FROM unnest(p_orders, p_sources, p_targets, p_reasons, p_details)
             WITH ORDINALITY AS x (o, s, t, r, d, k)
        ORDER BY k;
    RETURN n;
END
$$;

-- audit_append for many rows: the chain head is locked and moved once. Each row is hashed
-- exactly as audit_append hashes it, so audit.verify checks these rows like any other.
CREATE FUNCTION trading_audit_append_many(
    p_actor text[], p_action text[], p_service text[], p_endpoint text[], p_reason text[],
    p_entity_type text[], p_entity_id text[], p_before text[], p_after text[]
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    head audit_head%ROWTYPE;
    i integer;
    v_seq bigint;
    v_hash bytea;
    now_ts timestamptz := date_trunc('microseconds', clock_timestamp());
    b jsonb;
    a jsonb;
    prev bytea;
BEGIN
    SELECT * INTO head FROM audit_head WHERE id FOR UPDATE;
    v_seq := head.seq;
    v_hash := head.hash;
    FOR i IN 1 .. coalesce(array_length(p_actor, 1), 0) LOOP
        b := p_before[i]::jsonb;
        a := p_after[i]::jsonb;
        v_seq := v_seq + 1;
        prev := v_hash;
        v_hash := audit_row_hash(prev, v_seq, now_ts, p_actor[i], p_action[i], p_service[i],
            p_endpoint[i], p_reason[i], p_entity_type[i], p_entity_id[i], b, a);
        INSERT INTO audit_log VALUES (v_seq, now_ts, p_actor[i], p_action[i], p_service[i],
            p_endpoint[i], p_reason[i], p_entity_type[i], p_entity_id[i], b, a, prev, v_hash);
    END LOOP;
    UPDATE audit_head SET seq = v_seq, hash = v_hash WHERE id;
    RETURN v_seq;
END
$$;
