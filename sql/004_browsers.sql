-- Where each browser is: one row per open websocket (a tab), written by the
-- frontend that holds it. A row goes when its websocket closes; rows left by
-- a frontend that died (identified by its pid) are cleared when it starts
-- again, by the registry listener when supervisord reports it gone, and by
-- `salvusctl check`.

CREATE TABLE browsers (
    id           text        PRIMARY KEY,  -- the websocket (random, per connection)
    browser      text        NOT NULL,     -- the browser's cookie id
    session      text,                     -- the worksheet session it follows
    instance     text        NOT NULL,
    host         text        NOT NULL,
    frontend     text        NOT NULL,     -- program name: web0, web1, ...
    pid          integer     NOT NULL,     -- the frontend's process
    connected_at timestamptz NOT NULL,
    last_seen    timestamptz NOT NULL
);

CREATE INDEX browsers_by_frontend ON browsers (instance, host, frontend);
CREATE INDEX browsers_by_browser ON browsers (browser);
CREATE INDEX browsers_by_session ON browsers (session);
