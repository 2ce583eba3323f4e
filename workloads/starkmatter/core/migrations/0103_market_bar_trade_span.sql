-- The span of trades a bar was built from. A worker restarted in the middle of a bar
-- stores a second, later part of it: storage merges two parts that do not overlap, replaces
-- a part with one that covers it (a replay of the same input), and keeps the stored bar
-- when the new part is a subset of it. NULL for bars that came whole from a vendor or file.
ALTER TABLE market_bars ADD COLUMN first_trade_at timestamptz,
                        ADD COLUMN last_trade_at  timestamptz;
