-- Two writers creating the same day partition at once can also collide in the catalog
-- (unique_violation on the table's row type), not only as duplicate_table: both mean the
-- partition now exists.
CREATE OR REPLACE FUNCTION market_ensure_partition(parent text, day date) RETURNS void
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
    EXCEPTION WHEN duplicate_table OR unique_violation THEN
        NULL;
    END;
END;
$$;
