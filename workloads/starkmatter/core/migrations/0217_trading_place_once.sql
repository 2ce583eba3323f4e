-- Placement looked its client order id up twice on the optimistic path (place_checked, then
-- trading_order_place) and read the new row back with one more SELECT. The write itself is
-- now trading_order_record, which both paths call after their own look-up, and which
-- returns the row it inserted.
CREATE FUNCTION trading_order_record(
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
    steps integer := coalesce(array_length(p_targets, 1), 0);
    now_ts timestamptz := clock_timestamp();
    placed trading_orders;
BEGIN
    -- The caller holds the account lock and found no order with this client order id, so
    -- no other placement can be inserting it: the insert meets no existing version and
    -- never waits on an order row (migration 0214).
    INSERT INTO trading_orders (id, user_id, client_order_id, symbol, side, type,
        time_in_force, quantity, limit_price, stop_price, status, status_path, broker,
        created_at, updated_at, reject_code, reject_message, price_cap, reserved_cash,
        reserved_quantity, expires_at)
    VALUES (p_id, p_user, p_client_order_id, p_symbol, p_side, p_type, p_time_in_force,
        p_quantity, p_limit_price, p_stop_price,
        CASE WHEN steps = 0 THEN 'OrderCreated' ELSE p_targets[steps] END, p_targets,
        p_broker, p_now, now_ts, p_reject_code, p_reject_message, p_price_cap,
        p_reserved_cash, p_reserved_quantity, p_expires_at)
    RETURNING * INTO placed;
    INSERT INTO trading_order_events (order_id, source, target, reason, details, ts_event,
                                      ts_init)
        SELECT p_id, s, t, r,
               CASE WHEN k = steps + 1 AND NOT accepted
                    THEN jsonb_build_object('message', p_reject_message) END,
               p_now, CASE WHEN k = 1 THEN p_now ELSE now_ts END
        FROM unnest((ARRAY[NULL, 'OrderCreated'] || p_targets)[1:steps + 1],
                    ARRAY['OrderCreated'] || p_targets,
                    ARRAY['order received'] || p_reasons)
             WITH ORDINALITY AS x (s, t, r, k)
        ORDER BY k;
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
    RETURN NEXT placed;
END
$$;

CREATE OR REPLACE FUNCTION trading_order_place(
    p_id uuid, p_user uuid, p_client_order_id text, p_symbol text, p_side text, p_type text,
    p_time_in_force text, p_quantity numeric, p_limit_price numeric, p_stop_price numeric,
    p_broker text, p_now timestamptz, p_targets text[], p_reasons text[],
    p_reject_code text, p_reject_message text, p_reserved_cash numeric,
    p_reserved_quantity numeric, p_price_cap numeric, p_expires_at timestamptz,
    p_rate_window_start timestamptz, p_rate_window_count integer,
    p_topic text, p_payload jsonb
) RETURNS SETOF trading_orders LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY SELECT * FROM trading_orders
        WHERE user_id = p_user AND client_order_id = p_client_order_id;
    IF FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY SELECT * FROM trading_order_record(p_id, p_user, p_client_order_id,
        p_symbol, p_side, p_type, p_time_in_force, p_quantity, p_limit_price, p_stop_price,
        p_broker, p_now, p_targets, p_reasons, p_reject_code, p_reject_message,
        p_reserved_cash, p_reserved_quantity, p_price_cap, p_expires_at, p_rate_window_start,
        p_rate_window_count, p_topic, p_payload);
END
$$;

CREATE OR REPLACE FUNCTION trading_order_place_checked(
    p_max_orders_per_second integer, p_max_open_orders integer,
    p_max_position_notional numeric, p_max_gross_exposure numeric,
    p_id uuid, p_user uuid, p_client_order_id text, p_symbol text, p_side text, p_type text,
    p_time_in_force text, p_quantity numeric, p_limit_price numeric, p_stop_price numeric,
    p_broker text, p_now timestamptz, p_targets text[], p_reasons text[],
    p_reject_code text, p_reject_message text, p_reserved_cash numeric,
    p_reserved_quantity numeric, p_price_cap numeric, p_expires_at timestamptz,
    p_rate_window_start timestamptz, p_rate_window_count integer,
    p_topic text, p_payload jsonb
) RETURNS SETOF trading_orders LANGUAGE plpgsql AS $$
DECLARE
    c record;
    counted integer;
BEGIN
    PERFORM 1 FROM trading_accounts WHERE user_id = p_user FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- Each statement from here on sees every row committed before the lock was granted.
    RETURN QUERY SELECT * FROM trading_orders
        WHERE user_id = p_user AND client_order_id = p_client_order_id;
    IF FOUND THEN
        RETURN;
    END IF;
    SELECT * INTO c FROM trading_order_context_peek(p_user, p_symbol);
    counted := CASE WHEN c.rate_window_start = p_rate_window_start
                    THEN c.rate_window_count ELSE 0 END;
    IF p_reject_code IS NULL THEN
        IF c.kill_switch OR counted >= p_max_orders_per_second
           OR c.open_orders >= p_max_open_orders OR c.tradable IS FALSE
           OR (c.tick_size IS NOT NULL AND (p_limit_price % c.tick_size <> 0
                                            OR p_stop_price % c.tick_size <> 0)) THEN
            RETURN;
        END IF;
        IF p_side = 'sell' THEN
            IF p_quantity > c.position_quantity - c.reserved_sell_quantity THEN
                RETURN;
            END IF;
        ELSIF p_reserved_cash > c.cash - c.reserved_cash
           OR c.position_quantity * p_price_cap + c.open_buy_notional + p_reserved_cash
              > p_max_position_notional
           OR c.positions_gross + c.reserved_cash + p_reserved_cash > p_max_gross_exposure THEN
            RETURN;
        END IF;
    END IF;
    RETURN QUERY SELECT * FROM trading_order_record(p_id, p_user, p_client_order_id,
        p_symbol, p_side, p_type, p_time_in_force, p_quantity, p_limit_price, p_stop_price,
        p_broker, p_now, p_targets, p_reasons, p_reject_code, p_reject_message,
        p_reserved_cash, p_reserved_quantity, p_price_cap, p_expires_at, p_rate_window_start,
        counted + 1, p_topic, p_payload);
END
$$;
