-- Worksheets of signed-in accounts, with every saved version.
-- worksheets: one per worksheet; head is its newest version's number, taken
--   with the row lock by each save, so saves at once each get their own.
-- worksheet_versions: each version whole (cells, outputs, image links), as
--   JSON; PostgreSQL compresses it (TOAST). docs/history.md has the figures
--   that chose whole versions over deltas and git bundles.

CREATE TABLE worksheets (
    id          text        PRIMARY KEY,
    account     text        NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    title       text        NOT NULL,
    head        integer     NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz
);

CREATE INDEX worksheets_by_account ON worksheets (account, updated_at DESC);

CREATE TABLE worksheet_versions (
    worksheet     text        NOT NULL REFERENCES worksheets (id) ON DELETE CASCADE,
    version       integer     NOT NULL,
    content       jsonb       NOT NULL,
    digest        bytea       NOT NULL,
    saved_at      timestamptz NOT NULL DEFAULT now(),
    restored_from integer,
    PRIMARY KEY (worksheet, version)
);
