-- News pipeline (issue 6): articles deduplicated by URL and by content hash, indexed for
-- full-text search; conditional-GET state per feed URL; symbols users watch.

CREATE TABLE news_articles (
    id bigserial PRIMARY KEY,
    source text NOT NULL,
    url text NOT NULL,
    content_hash bytea NOT NULL,
    title text NOT NULL,
    summary text NOT NULL DEFAULT '',
    body text NOT NULL DEFAULT '',
    author text,
    published_at timestamptz NOT NULL,
    fetched_at timestamptz NOT NULL DEFAULT now(),
    category text NOT NULL
        CHECK (category IN ('earnings', 'mna', 'analyst_action', 'regulatory', 'macro', 'other')),
    -- finance sentiment in [-1, 1], exact
    sentiment numeric(5,4) NOT NULL CHECK (sentiment BETWEEN -1 AND 1),
    sentiment_label text NOT NULL CHECK (sentiment_label IN ('positive', 'negative', 'neutral')),
    symbols text[] NOT NULL DEFAULT '{}',
    companies text[] NOT NULL DEFAULT '{}',
    search tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english', coalesce(title, '')), 'A')
        || setweight(to_tsvector('english', coalesce(summary, '')), 'B')
        || setweight(to_tsvector('english', left(coalesce(body, ''), 100000)), 'C')
    ) STORED,
    CONSTRAINT news_articles_url_key UNIQUE (url),
    CONSTRAINT news_articles_content_key UNIQUE (content_hash)
);
CREATE INDEX news_articles_search_idx ON news_articles USING gin (search);
CREATE INDEX news_articles_symbols_idx ON news_articles USING gin (symbols);
CREATE INDEX news_articles_published_idx ON news_articles (published_at DESC, id DESC);
CREATE INDEX news_articles_category_idx ON news_articles (category, published_at DESC, id DESC);

-- Conditional GET: the validators the server last sent for each URL of a source.
CREATE TABLE news_fetch_state (
    source text NOT NULL,
    url text NOT NULL,
    etag text,
    last_modified text,
    last_status integer,
    last_fetched_at timestamptz,
    PRIMARY KEY (source, url)
);

-- Symbols a user watches: news mentioning one of them becomes an alert for that user.
CREATE TABLE user_watchlist (
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    symbol text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, symbol)
);
CREATE INDEX user_watchlist_symbol_idx ON user_watchlist (symbol);
