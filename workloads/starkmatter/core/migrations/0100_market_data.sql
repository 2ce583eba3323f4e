-- Market data (issue 3): ticks and quotes partitioned by UTC day, bars, dead letters.
-- Prices and sizes are exact numeric(24,8); never binary floats.

CREATE TABLE market_ticks (
    ts      timestamptz   NOT NULL,
    symbol  text          NOT NULL,
    price   numeric(24,8) NOT NULL,
    size    numeric(24,8) NOT NULL,
    -- 32-bit content hash (trade id, or price and size) that, with symbol and ts, makes
    -- a trade's identity: replaying the same input cannot store a row twice.
    uid     bigint        NOT NULL
) PARTITION BY RANGE (ts);
CREATE UNIQUE INDEX market_ticks_identity ON market_ticks (symbol, ts, uid);

CREATE TABLE market_quotes (
    ts        timestamptz   NOT NULL,
    symbol    text          NOT NULL,
    bid       numeric(24,8) NOT NULL,
    ask       numeric(24,8) NOT NULL,
    bid_size  numeric(24,8) NOT NULL,
    ask_size  numeric(24,8) NOT NULL,
    uid       bigint        NOT NULL
) PARTITION BY RANGE (ts);
CREATE UNIQUE INDEX market_quotes_identity ON market_quotes (symbol, ts, uid);

CREATE TABLE market_bars (
    symbol      text          NOT NULL,
    interval    text          NOT NULL CHECK (interval IN ('1s', '1m')),
    ts          timestamptz   NOT NULL,
    open        numeric(24,8) NOT NULL,
    high        numeric(24,8) NOT NULL,
    low         numeric(24,8) NOT NULL,
    close       numeric(24,8) NOT NULL,
    volume      numeric(24,8) NOT NULL,
    vwap        numeric(24,8) NOT NULL,
    trades      integer       NOT NULL,
    indicators  jsonb         NOT NULL DEFAULT '{}',
    updated_at  timestamptz   NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, interval, ts)
);

CREATE TABLE market_rejections (
    id           bigserial   PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now(),
    feed         text        NOT NULL,
    reason       text        NOT NULL,
    symbol       text,
    detail       text        NOT NULL DEFAULT '',
    raw          text        NOT NULL
);
CREATE INDEX market_rejections_reason ON market_rejections (reason, received_at);
CREATE INDEX market_rejections_received ON market_rejections (received_at);

-- One partition per UTC day, named <parent>_YYYYMMDD. Creating one that exists is a no-op,
-- also when two writers race for it.
CREATE FUNCTION market_ensure_partition(parent text, day date) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    child text := parent || '_' || to_char(day, 'YYYYMMDD');
BEGIN
    IF parent NOT IN ('market_ticks', 'market_quotes') THEN
        RAISE EXCEPTION 'not a partitioned market table: %', parent;
    END IF;
    IF to_regclass(child) IS NOT NULL THEN
        RETURN;
    END IF;
    BEGIN
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
            child, parent,
            (day::timestamp AT TIME ZONE 'UTC'), ((day + 1)::timestamp AT TIME ZONE 'UTC'));
    EXCEPTION WHEN duplicate_table THEN
        NULL;
    END;
END;
$$;

-- Retention: drop whole days older than cutoff (cheap: no row-by-row DELETE, no vacuum).
CREATE FUNCTION market_drop_partitions_before(parent text, cutoff date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    child record;
    dropped integer := 0;
BEGIN
    IF parent NOT IN ('market_ticks', 'market_quotes') THEN
        RAISE EXCEPTION 'not a partitioned market table: %', parent;
    END IF;
    FOR child IN
        SELECT c.relname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = parent::regclass
          AND c.relname ~ ('^' || parent || '_\d{8}$')
          AND to_date(right(c.relname, 8), 'YYYYMMDD') < cutoff
    LOOP
        EXECUTE format('DROP TABLE %I', child.relname);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END;
$$;
