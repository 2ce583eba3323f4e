-- Order placement in two round trips while the account row is locked: the lock is held
-- only as long as it takes PostgreSQL, not the API process, to do the work.

-- Lock the account, then (in a second statement, so every joined row is current) read
-- what the risk checks need. No row: the user has no account yet.
CREATE FUNCTION trading_order_context(p_user uuid, p_symbol text)
RETURNS TABLE (
    cash numeric, reserved_cash numeric, open_orders integer,
    rate_window_start timestamptz, rate_window_count integer, kill_switch boolean,
    tradable boolean, tick_size numeric, position_quantity numeric,
    reserved_sell_quantity numeric, open_buy_notional numeric, positions_gross numeric
) LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM trading_accounts WHERE user_id = p_user FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT a.cash, a.reserved_cash, a.open_orders, a.rate_window_start, a.rate_window_count,
           k.active, i.tradable, i.tick_size,
           coalesce(p.quantity, 0), coalesce(p.reserved_quantity, 0),
           (SELECT coalesce(sum(o.reserved_cash), 0) FROM trading_orders o
             WHERE o.user_id = p_user AND o.symbol = p_symbol AND o.side = 'buy'
               AND o.status IN ('RiskChecked', 'Submitted', 'Pending', 'PartiallyFilled')),
           (SELECT coalesce(sum(abs(q.quantity) * coalesce(q.mark_price, q.avg_cost)), 0)
              FROM trading_positions q WHERE q.user_id = p_user)
    FROM trading_accounts a
    CROSS JOIN trading_kill_switch k
    LEFT JOIN trading_positions p ON p.user_id = a.user_id AND p.symbol = p_symbol
    LEFT JOIN trading_instruments i ON i.symbol = p_symbol
    WHERE a.user_id = p_user;
END
$$;

-- Record a new order and the decision the risk checks made for it: the walk along the
-- graph, the reservation (accepted) or the reason (rejected), the rate window, and the
-- outbox event. A client order id seen before returns the original order untouched.
CREATE FUNCTION trading_order_place(
    p_id uuid, p_user uuid, p_client_order_id text, p_symbol text, p_side text, p_type text,
    p_time_in_force text, p_quantity numeric, p_limit_price numeric, p_stop_price numeric,
    p_broker text, p_now timestamptz, p_targets text[], p_reasons text[],
    p_reject_code text, p_reject_message text, p_reserved_cash numeric,
    p_reserved_quantity numeric, p_price_cap numeric, p_expires_at timestamptz,
    p_rate_window_start timestamptz, p_rate_window_count integer,
    p_topic text, p_payload jsonb
) RETURNS SETOF trading_orders LANGUAGE plpgsql AS $$
DECLARE
    accepted boolean := p_reject_code IS NULL;
BEGIN
    INSERT INTO trading_orders (id, user_id, client_order_id, symbol, side, type,
        time_in_force, quantity, limit_price, stop_price, status, broker, created_at,
        updated_at)
    VALUES (p_id, p_user, p_client_order_id, p_symbol, p_side, p_type, p_time_in_force,
        p_quantity, p_limit_price, p_stop_price, 'OrderCreated', p_broker, p_now, p_now)
    ON CONFLICT (user_id, client_order_id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN QUERY SELECT * FROM trading_orders
            WHERE user_id = p_user AND client_order_id = p_client_order_id;
        RETURN;
    END IF;
    INSERT INTO trading_order_events (order_id, source, target, reason, ts_event, ts_init)
        VALUES (p_id, NULL, 'OrderCreated', 'order received', p_now, p_now);
    PERFORM trading_order_advance(p_id, 'OrderCreated', p_targets, p_reasons, p_now,
        CASE WHEN accepted THEN NULL ELSE jsonb_build_object('message', p_reject_message) END);
    UPDATE trading_orders SET reject_code = p_reject_code, reject_message = p_reject_message,
        price_cap = p_price_cap, reserved_cash = p_reserved_cash,
        reserved_quantity = p_reserved_quantity, expires_at = p_expires_at
        WHERE id = p_id;
    UPDATE trading_accounts SET
        reserved_cash = reserved_cash + p_reserved_cash,
        open_orders = open_orders + CASE WHEN accepted THEN 1 ELSE 0 END,
        rate_window_start = p_rate_window_start, rate_window_count = p_rate_window_count,
        updated_at = p_now
        WHERE user_id = p_user;
    IF p_reserved_quantity > 0 THEN
        UPDATE trading_positions SET reserved_quantity = reserved_quantity + p_reserved_quantity
            WHERE user_id = p_user AND symbol = p_symbol;
    END IF;
    INSERT INTO trading_outbox (topic, payload) VALUES (p_topic, p_payload);
    RETURN QUERY SELECT * FROM trading_orders WHERE id = p_id;
END
$$;
