-- Placement holds its account lock and must never wait on an order row, so that the order
-- worker may update order rows first and lock accounts last, only for its final ledger
-- write. INSERT ... ON CONFLICT waited when a reused client order id's row was being
-- updated by the worker (the unique check waits on a version being replaced); looking the
-- id up first avoids that. With the account locked, no other placement for this user can
-- be inserting, so when the lookup finds nothing the insert meets no existing version.
CREATE OR REPLACE FUNCTION trading_order_place(
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
    RETURN QUERY SELECT * FROM trading_orders
        WHERE user_id = p_user AND client_order_id = p_client_order_id;
    IF FOUND THEN
        RETURN;
    END IF;
    INSERT INTO trading_orders (id, user_id, client_order_id, symbol, side, type,
        time_in_force, quantity, limit_price, stop_price, status, broker, created_at,
        updated_at, reject_code, reject_message, price_cap, reserved_cash, reserved_quantity,
        expires_at)
    VALUES (p_id, p_user, p_client_order_id, p_symbol, p_side, p_type, p_time_in_force,
        p_quantity, p_limit_price, p_stop_price, 'OrderCreated', p_broker, p_now, p_now,
        p_reject_code, p_reject_message, p_price_cap, p_reserved_cash, p_reserved_quantity,
        p_expires_at)
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
