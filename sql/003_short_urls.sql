-- Permalinks: a worksheet's cells under a short random id (/s/<id>).
-- content_hash makes identical content reuse its id; opened/last_opened
-- count how often a link was followed.

CREATE TABLE short_urls (
    id           text        PRIMARY KEY CHECK (id ~ '^[A-Za-z]{6,16}$'),
    content      jsonb       NOT NULL,
    content_hash text        NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    opened       bigint      NOT NULL DEFAULT 0,
    last_opened  timestamptz
);
