-- The log table: one row per line a program wrote, with the time the line
-- was written (taken from the line), not the time it was inserted.
-- A series of its own (sql/logs/, ledger log_schema_migrations): logs may
-- live in another database than the rest ([logs] dsn).
CREATE TABLE log (
    id       bigserial PRIMARY KEY,
    at       timestamptz NOT NULL,           -- the record time, from the line
    instance text NOT NULL,                  -- the data folder ([salvus] instance)
    host     text NOT NULL,
    program  text NOT NULL,                  -- web0, worker1, registry, postgres, ...
    pid      integer,
    level    text NOT NULL CHECK (level IN ('DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL')),
    session  text,
    browser  text,
    message  text NOT NULL
);
CREATE INDEX log_at ON log (at);
CREATE INDEX log_program_at ON log (program, at);
CREATE INDEX log_session ON log (session) WHERE session IS NOT NULL;

-- Where the shipper stands in each log file, written in the same transaction
-- as the rows it read there: exactly once across crashes. A file is known by
-- its inode and its first bytes (an inode number may be reused).
CREATE TABLE log_cursors (
    instance text NOT NULL,
    host     text NOT NULL,
    stream   text NOT NULL,                  -- the file's name without .log[.N]
    inode    bigint NOT NULL,
    position bigint NOT NULL,                -- bytes of that file already shipped
    head     bytea NOT NULL,                 -- its first bytes, up to 64
    shipped  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance, host, stream)
);
