-- Trading: accounts, orders and their events, executions, positions, portfolio snapshots,
-- and the transactional outbox the order worker drains.

-- A paper account per user. cash >= reserved_cash >= 0: an order reserves what it may
-- spend under the account's row lock, so two orders can never spend the same cash.
CREATE TABLE trading_accounts (
    user_id uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    cash numeric NOT NULL,
    reserved_cash numeric NOT NULL DEFAULT 0,
    starting_cash numeric NOT NULL,
    open_orders integer NOT NULL DEFAULT 0 CHECK (open_orders >= 0),
    rate_window_start timestamptz,
    rate_window_count integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT trading_accounts_buying_power CHECK (reserved_cash >= 0 AND cash >= reserved_cash)
);

-- One row: the admin kill switch. While active, every new order is rejected.
CREATE TABLE trading_kill_switch (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    active boolean NOT NULL DEFAULT false,
    reason text NOT NULL DEFAULT '',
    changed_by text NOT NULL DEFAULT '',
    changed_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO trading_kill_switch DEFAULT VALUES;

-- Per-symbol overrides: halted symbols and tick sizes other than the default.
CREATE TABLE trading_instruments (
    symbol text PRIMARY KEY,
    tradable boolean NOT NULL DEFAULT true,
    tick_size numeric CHECK (tick_size > 0)
);

-- The order graph; the same rows as starkmatter.orders.lifecycle.TRANSITIONS (a test
-- checks they agree). The trigger below refuses any status change not listed here.
CREATE TABLE trading_order_transitions (
    source text NOT NULL,
    target text NOT NULL,
    seed boolean NOT NULL,
    why text NOT NULL,
    PRIMARY KEY (source, target)
);
INSERT INTO trading_order_transitions (source, target, seed, why) VALUES
    ('OrderCreated', 'Validated', true, 'order passed validation'),
    ('Validated', 'RiskChecked', true, 'order passed the risk checks'),
    ('RiskChecked', 'Submitted', true, 'order sent to the broker'),
    ('Submitted', 'Pending', true, 'broker accepted the order'),
    ('Pending', 'Filled', true, 'order filled completely'),
    ('Pending', 'PartiallyFilled', true, 'order filled in part'),
    ('PartiallyFilled', 'Filled', true, 'rest of the order filled'),
    ('Pending', 'Cancelled', true, 'cancelled, expired or IOC/FOK unfilled'),
    ('Pending', 'Rejected', true, 'broker rejected a working order'),
    ('OrderCreated', 'Rejected', false, 'validation failed'),
    ('Validated', 'Rejected', false, 'risk check failed'),
    ('Submitted', 'Rejected', false, 'broker refused the order'),
    ('PartiallyFilled', 'PartiallyFilled', false, 'another partial fill'),
    ('PartiallyFilled', 'Cancelled', false, 'unfilled rest cancelled');

CREATE TABLE trading_orders (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_order_id text NOT NULL,
    symbol text NOT NULL,
    side text NOT NULL CHECK (side IN ('buy', 'sell')),
    type text NOT NULL CHECK (type IN ('market', 'limit', 'stop', 'stop_limit')),
    time_in_force text NOT NULL CHECK (time_in_force IN ('day', 'gtc', 'ioc', 'fok')),
    quantity numeric NOT NULL,
    limit_price numeric,
    stop_price numeric,
    price_cap numeric,
    status text NOT NULL,
    filled_quantity numeric NOT NULL DEFAULT 0,
    avg_fill_price numeric,
    reserved_cash numeric NOT NULL DEFAULT 0 CHECK (reserved_cash >= 0),
    reserved_quantity numeric NOT NULL DEFAULT 0 CHECK (reserved_quantity >= 0),
    triggered boolean NOT NULL DEFAULT false,
    cancel_requested boolean NOT NULL DEFAULT false,
    reject_code text,
    reject_message text,
    broker text NOT NULL DEFAULT 'paper',
    broker_order_id text,
    expires_at timestamptz,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    UNIQUE (user_id, client_order_id),
    CONSTRAINT trading_orders_filled_within CHECK (
        filled_quantity >= 0 AND filled_quantity <= greatest(quantity, 0))
);
CREATE INDEX trading_orders_user_created_idx ON trading_orders (user_id, created_at DESC, id DESC);
CREATE INDEX trading_orders_working_idx ON trading_orders (symbol, id)
    WHERE status IN ('Pending', 'PartiallyFilled');
CREATE INDEX trading_orders_user_live_idx ON trading_orders (user_id, symbol)
    WHERE status IN ('RiskChecked', 'Submitted', 'Pending', 'PartiallyFilled');

CREATE FUNCTION trading_orders_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.status <> 'OrderCreated' THEN
            RAISE EXCEPTION 'a new order starts in OrderCreated, not %', NEW.status
                USING ERRCODE = 'check_violation';
        END IF;
    ELSIF NEW.status IS DISTINCT FROM OLD.status THEN
        IF NOT EXISTS (SELECT 1 FROM trading_order_transitions
                       WHERE source = OLD.status AND target = NEW.status) THEN
            RAISE EXCEPTION 'order % cannot go from % to %', OLD.id, OLD.status, NEW.status
                USING ERRCODE = 'check_violation';
        END IF;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.filled_quantity < OLD.filled_quantity THEN
        RAISE EXCEPTION 'order % filled quantity cannot go down', OLD.id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER trading_orders_guard BEFORE INSERT OR UPDATE ON trading_orders
    FOR EACH ROW EXECUTE FUNCTION trading_orders_guard();

-- Every transition, with when it happened (ts_event) and when we recorded it (ts_init).
CREATE TABLE trading_order_events (
    id bigserial PRIMARY KEY,
    order_id uuid NOT NULL REFERENCES trading_orders (id) ON DELETE CASCADE,
    source text,
    target text NOT NULL,
    reason text NOT NULL,
    details jsonb,
    ts_event timestamptz NOT NULL,
    ts_init timestamptz NOT NULL
);
CREATE INDEX trading_order_events_order_idx ON trading_order_events (order_id, id);

-- Move an order along the graph one or more steps, recording one event per step. The
-- UPDATE only matches while the order is still in the expected state, so of two racing
-- writers exactly one wins; returns false (and changes nothing) for the loser.
CREATE FUNCTION trading_order_advance(
    p_order uuid, p_from text, p_targets text[], p_reasons text[], p_ts_event timestamptz,
    p_details jsonb DEFAULT NULL
) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    cur text := p_from;
    i integer;
    now_ts timestamptz := clock_timestamp();
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_targets, 1), 0) LOOP
        UPDATE trading_orders SET status = p_targets[i], updated_at = now_ts
            WHERE id = p_order AND status = cur;
        IF NOT FOUND THEN
            IF i = 1 THEN
                RETURN false;
            END IF;
            RAISE EXCEPTION 'order % left % while it was being advanced', p_order, cur;
        END IF;
        INSERT INTO trading_order_events (order_id, source, target, reason, details, ts_event,
                                          ts_init)
            VALUES (p_order, cur, p_targets[i], p_reasons[i],
                    CASE WHEN i = array_length(p_targets, 1) THEN p_details END,
                    p_ts_event, now_ts);
        cur := p_targets[i];
    END LOOP;
    RETURN true;
END
$$;

CREATE TABLE trading_executions (
    id uuid PRIMARY KEY,
    order_id uuid NOT NULL REFERENCES trading_orders (id) ON DELETE CASCADE,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    symbol text NOT NULL,
    side text NOT NULL,
    quantity numeric NOT NULL CHECK (quantity > 0),
    price numeric NOT NULL CHECK (price > 0),
    fee numeric NOT NULL DEFAULT 0,
    broker_execution_id text,
    ts_event timestamptz NOT NULL,
    ts_init timestamptz NOT NULL,
    UNIQUE (order_id, broker_execution_id)
);
CREATE INDEX trading_executions_user_idx ON trading_executions (user_id, ts_event);

-- Long-only: quantity >= reserved_quantity >= 0, so a position never goes below what
-- working sell orders have promised, nor below zero.
CREATE TABLE trading_positions (
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    symbol text NOT NULL,
    quantity numeric NOT NULL DEFAULT 0,
    reserved_quantity numeric NOT NULL DEFAULT 0,
    avg_cost numeric NOT NULL DEFAULT 0,
    realized_pnl numeric NOT NULL DEFAULT 0,
    mark_price numeric,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, symbol),
    CONSTRAINT trading_positions_long_only CHECK (
        reserved_quantity >= 0 AND quantity >= reserved_quantity)
);

CREATE TABLE portfolio_snapshots (
    id bigserial PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    ts timestamptz NOT NULL,
    cash numeric NOT NULL,
    positions_value numeric NOT NULL,
    equity numeric NOT NULL,
    realized_pnl numeric NOT NULL,
    unrealized_pnl numeric NOT NULL,
    daily_return numeric,
    cumulative_return numeric,
    volatility numeric,
    max_drawdown numeric NOT NULL,
    sharpe numeric
);
CREATE INDEX portfolio_snapshots_user_ts_idx ON portfolio_snapshots (user_id, ts DESC, id DESC);

-- The latest equity of each day: what daily returns, volatility and Sharpe are made of.
CREATE TABLE portfolio_daily (
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    day date NOT NULL,
    close_equity numeric NOT NULL,
    PRIMARY KEY (user_id, day)
);

-- Transactional outbox: written in the same transaction as the change it announces,
-- deleted in the same transaction as the handler's effects, so each event is applied
-- exactly once however often the worker dies.
CREATE TABLE trading_outbox (
    id bigserial PRIMARY KEY,
    topic text NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    available_at timestamptz NOT NULL DEFAULT now(),
    attempts integer NOT NULL DEFAULT 0,
    last_error text,
    parked boolean NOT NULL DEFAULT false
);
CREATE INDEX trading_outbox_ready_idx ON trading_outbox (id) WHERE NOT parked;
