-- Retention (issue 6): legal holds, archive runs and the parts each run wrote. A run's
-- progress (last_key) moves in the same transaction that purges the rows of a part, so a
-- run interrupted half way resumes without losing or duplicating a row.

CREATE TABLE retention_legal_holds (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    dataset text,
    -- a hold names a user, a symbol, or (both null) the whole dataset
    user_id uuid,
    symbol text,
    reason text NOT NULL,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    released_at timestamptz
);
CREATE INDEX retention_legal_holds_active_idx ON retention_legal_holds (dataset)
    WHERE released_at IS NULL;

CREATE TABLE retention_runs (
    id uuid PRIMARY KEY,
    policy text NOT NULL,
    dataset text NOT NULL,
    action text NOT NULL CHECK (action IN ('archive', 'delete', 'archiveThenDelete')),
    cutoff timestamptz NOT NULL,
    status text NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    last_key jsonb,
    rows_archived bigint NOT NULL DEFAULT 0,
    rows_purged bigint NOT NULL DEFAULT 0,
    manifest_key text,
    error text
);
CREATE UNIQUE INDEX retention_runs_one_running ON retention_runs (policy, dataset)
    WHERE status = 'running';

CREATE TABLE retention_parts (
    run_id uuid NOT NULL REFERENCES retention_runs (id),
    seq integer NOT NULL,
    object_key text NOT NULL,
    rows integer NOT NULL,
    bytes bigint NOT NULL,
    sha256 text NOT NULL,
    content_sha256 text NOT NULL,
    first_key jsonb NOT NULL,
    last_key jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, seq)
);
