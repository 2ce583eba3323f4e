-- Group placement: an API process sends the optimistic placements that arrived while its
-- previous ones were in flight as one statement, one transaction and one commit (one WAL
-- flush) instead of one each. Every order is placed exactly as trading_order_place_checked
-- places it alone, in the order given; the batch's accounts are locked first, in user-id
-- order, the order every writer takes accounts in, so batches from several processes never
-- deadlock. Returns the rows placed (or found by client order id); an order with no row is
-- decided again by the caller, under its own lock.
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
