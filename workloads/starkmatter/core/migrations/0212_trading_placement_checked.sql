-- Placement without retries: 0211 placed only when nothing the decision read had changed,
-- which under concurrent orders of one account (the common case for an active trader)
-- failed for most orders. Now the write re-checks, under the account lock, exactly the
-- limits that depend on the account (the rest of validation depends only on the order,
-- the quote and reference data), and places the order if they still hold. It refuses
-- (no row) only when a limit no longer holds; the API then decides again under the lock,
-- which also produces the precise rejection reason.

DROP FUNCTION trading_order_place_if(text, uuid, uuid, text, text, text, text, text, numeric,
    numeric, numeric, text, timestamptz, text[], text[], text, text, numeric, numeric, numeric,
    timestamptz, timestamptz, integer, text, jsonb);
DROP FUNCTION trading_order_context_peek(uuid, text);

-- What the risk checks need, read without locking (the same columns as
-- trading_order_context, which takes the account lock first).
CREATE FUNCTION trading_order_context_peek(p_user uuid, p_symbol text)
RETURNS TABLE (
    cash numeric, reserved_cash numeric, open_orders integer,
    rate_window_start timestamptz, rate_window_count integer, kill_switch boolean,
    tradable boolean, tick_size numeric, position_quantity numeric,
    reserved_sell_quantity numeric, open_buy_notional numeric, positions_gross numeric
) LANGUAGE sql STABLE AS $$
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
    WHERE a.user_id = p_user
$$;

-- trading_order_place (same arguments after the limits) for a decision made on an unlocked
-- read. Under the account lock: a known client order id returns the original order; an
-- acceptance is re-checked against the account-bound limits of starkmatter.orders.risk.check
-- (rate, open orders, sellable quantity, buying power, position notional, gross exposure)
-- and the kill switch, on current rows; the rate window is counted on current rows.
-- Returns the order, or no row when the account has none or a limit no longer holds.
CREATE FUNCTION trading_order_place_checked(
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
           OR c.open_orders >= p_max_open_orders THEN
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
    RETURN QUERY SELECT * FROM trading_order_place(p_id, p_user, p_client_order_id, p_symbol,
        p_side, p_type, p_time_in_force, p_quantity, p_limit_price, p_stop_price, p_broker,
        p_now, p_targets, p_reasons, p_reject_code, p_reject_message, p_reserved_cash,
        p_reserved_quantity, p_price_cap, p_expires_at, p_rate_window_start, counted + 1,
        p_topic, p_payload);
END
$$;
