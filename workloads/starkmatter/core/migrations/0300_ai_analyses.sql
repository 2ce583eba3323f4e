-- AI analysis (issue 6): one row per request, the history a user reads back.
-- The cached result lives in Redis; this table is the durable record.

CREATE TABLE ai_analyses (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind text NOT NULL CHECK (kind IN ('technical', 'news', 'portfolio_risk')),
    symbols text[] NOT NULL,
    question text,
    horizon text NOT NULL,
    cache_key text NOT NULL,
    data_version text NOT NULL,
    status text NOT NULL CHECK (status IN ('pending', 'done', 'failed')),
    -- who answered: the Anthropic API or the offline analyst; cached says it was reused
    source text CHECK (source IN ('anthropic', 'offline')),
    cached boolean NOT NULL DEFAULT false,
    model text,
    result jsonb,
    checks jsonb,
    fallback_reason text,
    error_code text,
    error_message text,
    usage jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz
);
CREATE INDEX ai_analyses_user_idx ON ai_analyses (user_id, created_at DESC, id DESC);
CREATE INDEX ai_analyses_created_idx ON ai_analyses (created_at);
