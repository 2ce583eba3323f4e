-- An order's walk along the graph is written as one row change, not one per step.
--
-- Before, every step was its own UPDATE: an order placed and filled became six versions of
-- its row, each a new entry in all five of the table's indexes (the status is in two
-- partial indexes' predicates, so no step could be a HOT update). Now the writer names the
-- steps in `status_path` and sets the final status; the guard checks every step against
-- the graph, exactly as it checked single steps, and clears the path, so it is never
-- stored. A change of status without a path is one step, checked as before.

ALTER TABLE trading_orders ADD COLUMN status_path text[];
COMMENT ON COLUMN trading_orders.status_path IS
    'the steps of this write, ending in status; checked and cleared by trading_orders_guard';

CREATE OR REPLACE FUNCTION trading_orders_guard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    cur text;
    step text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.status <> 'OrderCreated' AND NEW.status_path IS NULL THEN
            RAISE EXCEPTION 'a new order starts in OrderCreated, not %', NEW.status
                USING ERRCODE = 'check_violation';
        END IF;
        cur := 'OrderCreated';
    ELSE
        cur := OLD.status;
    END IF;
    IF NEW.status_path IS NOT NULL OR NEW.status IS DISTINCT FROM cur THEN
        FOREACH step IN ARRAY coalesce(NEW.status_path, ARRAY[NEW.status]) LOOP
            IF NOT EXISTS (SELECT 1 FROM trading_order_transitions
                           WHERE source = cur AND target = step) THEN
                RAISE EXCEPTION 'order % cannot go from % to %', NEW.id, cur, step
                    USING ERRCODE = 'check_violation';
            END IF;
            cur := step;
        END LOOP;
        IF cur IS DISTINCT FROM NEW.status THEN
            RAISE EXCEPTION 'order % steps end in %, not in its status %', NEW.id, cur, NEW.status
                USING ERRCODE = 'check_violation';
        END IF;
        NEW.status_path := NULL;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.filled_quantity < OLD.filled_quantity THEN
        RAISE EXCEPTION 'order % filled quantity cannot go down', OLD.id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;

-- Placement writes the order in the state its decision reached (RiskChecked or Rejected)
-- with one event per step, OrderCreated first, in one INSERT each, and returns the row it
-- inserted. trading_order_record is that write; trading_order_place (the locked path) and
-- trading_order_place_checked (the optimistic path, 0216) call it after their own look-up
-- of the client order id.
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

-- The worker now writes its batch's steps itself (one UPDATE of the orders with their
-- paths, one INSERT of the events); nothing else called this.
DROP FUNCTION trading_order_advance_many(uuid[], text[], text[], text[], jsonb[], timestamptz);
