-- Retention: a legal hold on one data set must name something that data set's rows have. A
-- hold on 'bars' naming only a user, or on 'portfolio_snapshots' naming only a symbol, held
-- none of their rows while it looked in force; it is now refused, with the reason. A hold
-- naming a user and a symbol is accepted where the data set has either: the purge drops the
-- criterion it cannot apply, which widens the hold (datasets.py, ``_criteria``). A symbol
-- is what a row's symbol column says, or its symbols array (news, AI analyses). A hold
-- naming no data set applies wherever it can, so it is never refused.

-- The reason a hold would hold none of its data set's rows, or NULL when it holds some (or
-- names no data set, or one migration 0350's check refuses). The columns each data set has
-- mirror DATASETS in workloads/starkmatter/retention/datasets.py; a test compares them.
-- Holds placed before this migration are not re-checked; legal lists the ones in force
-- that hold nothing with:
--   SELECT id, dataset, user_id, symbol, retention_hold_refusal(dataset, user_id, symbol)
--   FROM retention_legal_holds
--   WHERE released_at IS NULL AND retention_hold_refusal(dataset, user_id, symbol) IS NOT NULL;
CREATE FUNCTION retention_hold_refusal(hold_dataset text, hold_user uuid, hold_symbol text)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN hold_user IS NULL AND hold_symbol IS NULL THEN NULL
        WHEN (hold_user IS NOT NULL AND d.has_user)
            OR (hold_symbol IS NOT NULL AND d.has_symbol) THEN NULL
        WHEN d.has_user THEN format(
            'a hold on %s cannot name only a symbol: its rows have no symbol, so it would '
            'hold none of them; name the user (with or without the symbol) to hold that '
            'user''s rows, neither to hold the whole data set, or no dataset to hold the '
            'symbol wherever rows have one', d.name)
        WHEN d.has_symbol THEN format(
            'a hold on %s cannot name only a user: its rows belong to no user, so it would '
            'hold none of them; name a symbol (with or without the user) to hold that '
            'symbol''s rows, neither to hold the whole data set, or no dataset to hold the '
            'user''s rows wherever rows have a user', d.name)
        ELSE format(
            'a hold on %s cannot name a user or a symbol: its rows have neither, so it would '
            'hold none of them; name neither to hold the whole data set, or no dataset to '
            'hold the user''s or symbol''s rows wherever rows have one', d.name)
    END
    FROM (VALUES
        ('orders', true, true),
        ('executions', true, true),
        ('portfolio_snapshots', true, false),
        ('ai_analyses', true, true),
        ('alert_events', true, false),
        ('sessions', true, false),
        ('ticks', false, true),
        ('bars', false, true),
        ('news', false, true),
        ('audit', false, false)
    ) AS d (name, has_user, has_symbol)
    WHERE d.name = hold_dataset
$$;

CREATE FUNCTION retention_legal_holds_expressible() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    refusal text := retention_hold_refusal(NEW.dataset, NEW.user_id, NEW.symbol);
BEGIN
    IF refusal IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation', MESSAGE = refusal,
            CONSTRAINT = 'retention_legal_holds_expressible';
    END IF;
    RETURN NEW;
END;
$$;
-- Only when what the hold names changes: releasing a hold placed before this migration
-- must still work.
CREATE TRIGGER retention_legal_holds_expressible
    BEFORE INSERT OR UPDATE OF dataset, user_id, symbol ON retention_legal_holds
    FOR EACH ROW EXECUTE FUNCTION retention_legal_holds_expressible();
