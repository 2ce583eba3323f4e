-- Group placement: an API process sends the optimistic placements that arrived while its
-- previous ones were in flight as one statement, one transaction and one commit (one WAL
-- flush) instead of one each. Every order is placed exactly as trading_order_place_checked
-- places it alone, in the order given; the batch's accounts are locked first, in user-id
-- order, the order every writer takes accounts in, so batches from several processes never
-- deadlock. Returns the rows placed (or found by client order id); an order with no row is
-- decided again by the caller, under its own lock.
--
-- Grouping makes an order wait longer between its decision and its write, so it may be
-- written after a later-decided order of the same account has opened a newer rate window.
-- trading_order_place_checked now refuses such an order (the older second's count is gone)
-- and the API decides it again, now, instead of restarting the window at the older second
-- and letting that second pass the limit.
CREATE FUNCTION trading_order_place_checked_many(
    p_max_orders_per_second integer, p_max_open_orders integer,
    p_max_position_notional numeric, p_max_gross_exposure numeric,
    p_id uuid[], p_user uuid[], p_client_order_id text[], p_symbol text[], p_side text[],
    p_type text[], p_time_in_force text[], p_quantity numeric[], p_limit_price numeric[],
    p_stop_price numeric[], p_broker text[], p_now timestamptz[], p_targets text[],
    p_reasons text[], p_reject_code text[], p_reject_message text[],
    p_reserved_cash numeric[], p_reserved_quantity numeric[], p_price_cap numeric[],
    p_expires_at timestamptz[], p_rate_window_start timestamptz[],
    p_rate_window_count integer[], p_topic text[], p_payload text[]
) RETURNS SETOF trading_orders LANGUAGE plpgsql AS $$
DECLARE
    i integer;
BEGIN
    -- p_targets and p_reasons hold each order's steps joined by the unit separator (arrays
    -- of arrays must be rectangular).
    PERFORM 1 FROM trading_accounts WHERE user_id = ANY (p_user) ORDER BY user_id FOR UPDATE;
    FOR i IN 1 .. coalesce(array_length(p_id, 1), 0) LOOP
        RETURN QUERY SELECT * FROM trading_order_place_checked(p_max_orders_per_second,
            p_max_open_orders, p_max_position_notional, p_max_gross_exposure, p_id[i],
            p_user[i], p_client_order_id[i], p_symbol[i], p_side[i], p_type[i],
            p_time_in_force[i], p_quantity[i], p_limit_price[i], p_stop_price[i],
            p_broker[i], p_now[i], string_to_array(p_targets[i], chr(31)),
            string_to_array(p_reasons[i], chr(31)), p_reject_code[i], p_reject_message[i],
            p_reserved_cash[i], p_reserved_quantity[i], p_price_cap[i], p_expires_at[i],
            p_rate_window_start[i], p_rate_window_count[i], p_topic[i], p_payload[i]::jsonb);
    END LOOP;
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
        -- Decided in a second before the account's current window (it waited behind later
        -- orders): that second's count is gone, so it is decided again, now.
        IF p_rate_window_start < c.rate_window_start
           OR c.kill_switch OR counted >= p_max_orders_per_second
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
