-- The seed's event triggers leave through a transactional outbox: a producer appends the
-- event in the same transaction as the change it announces, and a relay hands it to the
-- durable channel (Celery with late acks) afterwards. A row is deleted once relayed; the
-- handlers are idempotent (task_applied_events), so a relay crash between hand-over and
-- delete only delivers the event twice, and the second delivery does nothing.
CREATE TABLE event_outbox (
    id          bigserial   PRIMARY KEY,
    event       text        NOT NULL CHECK (event IN
                    ('OrderPlaced', 'MarketDataUpdate', 'NewsArticleReceived', 'PortfolioChange')),
    event_key   text        NOT NULL CHECK (event_key <> ''),
    payload     jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- a producer that repeats a step after a crash appends the same event once
    UNIQUE (event, event_key)
);
