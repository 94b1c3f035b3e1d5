-- Component registry.
-- components: the current state of every supervisord program of every
--   appliance (instance = one data folder) sharing this database.
-- component_events: every state change, as recorded by the registry listener
--   (source 'listener') or repaired by `salvusctl check` (source 'check').
--   "at" is when the event was observed, not when the row was inserted.

CREATE TABLE components (
    instance   text        NOT NULL,
    name       text        NOT NULL,
    kind       text        NOT NULL,
    host       text        NOT NULL,
    pid        integer,
    state      text        NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (instance, name)
);

CREATE TABLE component_events (
    id         bigserial   PRIMARY KEY,
    instance   text        NOT NULL,
    name       text        NOT NULL,
    kind       text        NOT NULL,
    host       text        NOT NULL,
    pid        integer,
    state      text        NOT NULL,
    from_state text,
    source     text        NOT NULL CHECK (source IN ('listener', 'check')),
    at         timestamptz NOT NULL
);

CREATE INDEX component_events_by_name ON component_events (instance, name, at);
