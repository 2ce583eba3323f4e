-- The API's optimistic attempt no longer reads the account first (trading_order_context_peek
-- was one more statement per order): it accepts on the order and the quote alone, with the
-- default tick size, and this write decides on current rows. So the write also checks what
-- the attempt could not see: an instrument row that halts the symbol, and an instrument
-- tick size the prices are not on. It refuses (no row) exactly as for an account limit, and
-- the API then decides under the lock, which gives the precise reason.
--
-- An optimistic order may be written after a later-decided order of the same account has
-- opened a newer rate window (it waited longer between decision and write, e.g. in a
-- placement group, 0217). The older second's count is gone, so such an order is refused
-- too and decided again, now, instead of restarting the window at the older second and
-- letting that second pass the limit.
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
