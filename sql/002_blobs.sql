-- Content-addressed blobs (images of outputs), served at /blobs/<sha1>.
-- A blob is stored before the message that names it reaches a browser.

CREATE TABLE blobs (
    sha1       text        PRIMARY KEY CHECK (sha1 ~ '^[0-9a-f]{40}$'),
    mime       text        NOT NULL,
    data       bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
