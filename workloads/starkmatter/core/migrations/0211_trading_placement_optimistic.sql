-- Order placement in two autocommit round trips instead of BEGIN, lock, place, COMMIT.
--
-- 1. trading_order_context_peek reads what the risk checks need without locking, plus a
--    digest of all of it. 2. The API decides in Python and calls trading_order_place_if
--    with that digest: it locks the account, recomputes the digest from current rows, and
--    places the order only if nothing the decision used has changed; otherwise it returns
--    no row and the API decides again on fresh data. Each call is one statement, hence
--    atomic, and the decision is applied under the same account lock as before, so two
--    orders still can never spend the same buying power.

CREATE FUNCTION trading_order_context_peek(p_user uuid, p_symbol text)
RETURNS TABLE (
    cash numeric, reserved_cash numeric, open_orders integer,
    rate_window_start timestamptz, rate_window_count integer, kill_switch boolean,
    tradable boolean, tick_size numeric, position_quantity numeric,
    reserved_sell_quantity numeric, open_buy_notional numeric, positions_gross numeric,
    digest text
) LANGUAGE sql STABLE AS $$
    SELECT c.*, md5(c::text) FROM (
        SELECT a.cash, a.reserved_cash, a.open_orders, a.rate_window_start,
               a.rate_window_count, k.active, i.tradable, i.tick_size,
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
    ) c
$$;

-- trading_order_place (same arguments) behind a check that the decision is still current.
-- Returns the order (the original one for a client order id seen before), or no row when
-- the account has no row or the context changed since p_digest was read.
CREATE FUNCTION trading_order_place_if(
    p_digest text,
    p_id uuid, p_user uuid, p_client_order_id text, p_symbol text, p_side text, p_type text,
    p_time_in_force text, p_quantity numeric, p_limit_price numeric, p_stop_price numeric,
    p_broker text, p_now timestamptz, p_targets text[], p_reasons text[],
    p_reject_code text, p_reject_message text, p_reserved_cash numeric,
    p_reserved_quantity numeric, p_price_cap numeric, p_expires_at timestamptz,
    p_rate_window_start timestamptz, p_rate_window_count integer,
    p_topic text, p_payload jsonb
) RETURNS SETOF trading_orders LANGUAGE plpgsql AS $$
DECLARE
    current_digest text;
BEGIN
    PERFORM 1 FROM trading_accounts WHERE user_id = p_user FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- A new statement, so it sees every row committed before the lock was granted.
    RETURN QUERY SELECT * FROM trading_orders
        WHERE user_id = p_user AND client_order_id = p_client_order_id;
    IF FOUND THEN
        RETURN;
    END IF;
    SELECT digest INTO current_digest FROM trading_order_context_peek(p_user, p_symbol);
    IF current_digest IS DISTINCT FROM p_digest THEN
        RETURN;
    END IF;
    RETURN QUERY SELECT * FROM trading_order_place(p_id, p_user, p_client_order_id, p_symbol,
        p_side, p_type, p_time_in_force, p_quantity, p_limit_price, p_stop_price, p_broker,
        p_now, p_targets, p_reasons, p_reject_code, p_reject_message, p_reserved_cash,
        p_reserved_quantity, p_price_cap, p_expires_at, p_rate_window_start,
        p_rate_window_count, p_topic, p_payload);
END
$$;
