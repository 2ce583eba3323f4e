-- Why a cancel was asked for, kept with the flag. An order the API cannot end at once (not
-- yet working, or held by a real broker that must confirm) was flagged `cancel_requested`
-- alone, so the worker ended every such order as `user_cancel`, cancel-all and the kill
-- switch included. The API now writes the reason with the flag (the first cancel asked for
-- decides it) and the worker ends the order with it.
--
-- Nullable with no default: adding it rewrites no row, and a flag set before this migration
-- (no reason) is read as `user_cancel`, as it was. No index: it is only read from rows
-- already fetched, and a column in no index leaves the flag's UPDATE free to be HOT.
ALTER TABLE trading_orders ADD COLUMN cancel_reason text;
COMMENT ON COLUMN trading_orders.cancel_reason IS
    'the fills.CancelReason asked for with cancel_requested (user_cancel, cancel_all, kill_switch)';
