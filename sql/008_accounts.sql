-- Accounts, the identities that sign in to them, and their sign-ins.
-- accounts: one person. Its id is random and never shown to other accounts.
-- identities: (provider, subject) as the provider names the person; one
--   account may link several (Google and GitHub, say).
-- signins: one signed-in browser. The cookie holds a random token; only its
--   SHA-256 is stored, so a leaked table signs no one in. Sign-out ends the
--   row (ended_at): the cookie is dead on every frontend at once.

CREATE TABLE accounts (
    id          text        PRIMARY KEY,
    name        text        NOT NULL DEFAULT '',
    email       text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    seen_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE identities (
    provider    text        NOT NULL,
    subject     text        NOT NULL,
    account     text        NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    email       text        NOT NULL DEFAULT '',
    name        text        NOT NULL DEFAULT '',
    linked_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, subject)
);

CREATE INDEX identities_by_account ON identities (account);

CREATE TABLE signins (
    token_hash  bytea       PRIMARY KEY,
    account     text        NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    provider    text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    ended_at    timestamptz
);

CREATE INDEX signins_by_account ON signins (account);
