-- Celery tasks (issue 6): tasks that failed after their last retry, kept for inspection and
-- replay (the dead-letter queue), and which event deliveries were already applied.

CREATE TABLE task_dead_letters (
    id bigserial PRIMARY KEY,
    task_id text NOT NULL UNIQUE,
    task_name text NOT NULL,
    args jsonb NOT NULL,
    kwargs jsonb NOT NULL,
    error text NOT NULL,
    retries integer NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT now(),
    replayed_at timestamptz
);

-- Idempotency: an event key recorded in the same transaction as the task's effect.
CREATE TABLE task_applied_events (
    event_key text PRIMARY KEY,
    task_name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
