-- Retention: a legal hold must name a data set that exists, and its symbol is stored upper
-- case like every symbol, or it silently holds nothing (a hold on 'alert_event' or on
-- 'aapl' matched no row and the rows were purged). Runs count the rows they archived but
-- kept, because a hold placed during the run covered them.

-- NOT VALID: holds placed before this migration are not checked (a bad one would stop the
-- migration, and every start with it); `ALTER TABLE retention_legal_holds VALIDATE
-- CONSTRAINT retention_legal_holds_dataset_known` lists them for legal to correct.
ALTER TABLE retention_legal_holds ADD CONSTRAINT retention_legal_holds_dataset_known CHECK (
    dataset IS NULL OR dataset IN ('ticks', 'bars', 'orders', 'executions',
        'portfolio_snapshots', 'news', 'ai_analyses', 'alert_events', 'sessions', 'audit')
) NOT VALID;

CREATE FUNCTION retention_legal_holds_upper_symbol() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.symbol := upper(NEW.symbol);
    RETURN NEW;
END;
$$;
CREATE TRIGGER retention_legal_holds_upper_symbol
    BEFORE INSERT OR UPDATE OF symbol ON retention_legal_holds
    FOR EACH ROW EXECUTE FUNCTION retention_legal_holds_upper_symbol();
UPDATE retention_legal_holds SET symbol = upper(symbol) WHERE symbol <> upper(symbol);

ALTER TABLE retention_runs ADD COLUMN rows_kept bigint NOT NULL DEFAULT 0;
