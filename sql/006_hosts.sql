-- hosts: when each host's registry listener was last heard from. It beats
-- every few seconds (supervisord's TICK_5), so a host whose rows in
-- components say RUNNING but whose beat is old is not known to run anything:
-- `salvusctl status --all-hosts` says so instead of trusting stale rows.
CREATE TABLE hosts (
    instance text        NOT NULL,
    host     text        NOT NULL,
    seen_at  timestamptz NOT NULL,
    PRIMARY KEY (instance, host)
);
