-- Every worksheet session: where it runs and whose it is. Sessions live in
-- the workers; this is their record, written by the frontends that serve
-- them (any frontend may, one after the other).

CREATE TABLE sessions (
    id            text        PRIMARY KEY,  -- the same on every worker it ran on
    worker        text,                     -- where it runs (or last ran)
    owner         text        NOT NULL,     -- the browser cookie; the account later
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_activity timestamptz NOT NULL DEFAULT now(),
    state         text        NOT NULL CHECK (state IN ('running', 'lost', 'ended'))
);

CREATE INDEX sessions_by_owner ON sessions (owner);
CREATE INDEX sessions_by_worker ON sessions (worker) WHERE state = 'running';
