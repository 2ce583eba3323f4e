-- Alerts (issue 6): users' price alerts, every alert event (price, news, operational), and
-- the evaluator's state per operational rule so hysteresis survives a restart.

CREATE TABLE alert_rules (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    symbol text NOT NULL,
    condition text NOT NULL
        CHECK (condition IN ('price_above', 'price_below', 'pct_move', 'indicator')),
    threshold numeric NOT NULL,
    -- indicator rules: which indicator (rsi_14, macd_histogram, ...) and the comparison
    indicator text,
    comparison text CHECK (comparison IN ('above', 'below')),
    -- pct_move rules: the price the move is measured from (the last price at creation)
    reference_price numeric,
    note text NOT NULL DEFAULT '',
    active boolean NOT NULL DEFAULT true,
    -- whether the condition held at the last evaluation: an alert fires on the edge only
    condition_held boolean NOT NULL DEFAULT false,
    triggered_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT alert_rules_indicator_fields CHECK (
        condition <> 'indicator' OR (indicator IS NOT NULL AND comparison IS NOT NULL)),
    CONSTRAINT alert_rules_reference CHECK (
        condition <> 'pct_move' OR reference_price IS NOT NULL)
);
CREATE INDEX alert_rules_user_idx ON alert_rules (user_id, created_at DESC);
CREATE INDEX alert_rules_symbol_active_idx ON alert_rules (symbol) WHERE active;

CREATE TABLE alert_events (
    id bigserial PRIMARY KEY,
    user_id uuid REFERENCES users (id) ON DELETE CASCADE,
    rule text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('price', 'news', 'operational')),
    severity text NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    state text NOT NULL CHECK (state IN ('firing', 'resolved', 'triggered')),
    -- one event per fingerprint: a redelivered or re-evaluated event is stored once
    fingerprint text NOT NULL UNIQUE,
    summary text NOT NULL,
    details jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alert_events_user_idx ON alert_events (user_id, created_at DESC, id DESC);
CREATE INDEX alert_events_created_idx ON alert_events (created_at);

CREATE TABLE alert_rule_state (
    rule text PRIMARY KEY,
    state text NOT NULL CHECK (state IN ('ok', 'pending', 'firing')),
    since timestamptz NOT NULL,
    value text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
