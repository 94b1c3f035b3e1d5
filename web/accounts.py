"""Accounts, their linked identities and their sign-ins (sql/008_accounts.sql).

A sign-in is a random token in an HttpOnly cookie; the table keeps only its
SHA-256. Every request that needs the account looks the token up, so a
sign-out (or an expired row) ends the cookie on every frontend at once, and a
tampered or made-up cookie matches nothing.

Signing in with another provider while signed in links that identity to the
same account (Google and GitHub for one person).

The CSRF token of a sign-in is an HMAC of its token under the appliance's
secret: any frontend can check it, and it is useless without the cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from web.db import Database

SIGNIN_DAYS = 30


@dataclass(frozen=True)
class Account:
    id: str
    name: str
    email: str
    provider: str  # of this sign-in


@dataclass(frozen=True)
class Identity:
    """A person as a provider names them, after a verified sign-in."""
    provider: str
    subject: str
    email: str = ""
    name: str = ""


class LinkRefused(Exception):
    """An identity of one account cannot be linked to another."""


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Accounts:
    def __init__(self, db: Database, secret: bytes):
        self.db = db
        self.secret = secret

    def sign_in(self, identity: Identity, link_to: str | None = None) -> tuple[str, Account]:
        """The account of ``identity`` (made on its first sign-in, or the
        account ``link_to`` when the browser is signed in already: the new
        identity is linked to it) and a new sign-in token for it. Raises
        LinkRefused when the identity belongs to another account."""
        token = secrets.token_urlsafe(32)
        with self.db.connection() as conn, conn.cursor() as cur:
            cur.execute("SELECT account FROM identities WHERE provider = %s AND subject = %s",
                        (identity.provider, identity.subject))
            row = cur.fetchone()
            if row is not None and link_to is not None and row[0] != link_to:
                raise LinkRefused(f"this {identity.provider} identity signs in to another "
                                  "account; sign out first to use that one")
            if row is None:
                account = link_to or "a" + secrets.token_hex(12)
                if link_to is None:
                    cur.execute("INSERT INTO accounts (id, name, email) VALUES (%s, %s, %s)",
                                (account, identity.name, identity.email))
                cur.execute("INSERT INTO identities (provider, subject, account, email, name)"
                            " VALUES (%s, %s, %s, %s, %s)",
                            (identity.provider, identity.subject, account, identity.email,
                             identity.name))
            else:
                account = row[0]
                cur.execute("UPDATE identities SET email = %s, name = %s"
                            " WHERE provider = %s AND subject = %s",
                            (identity.email, identity.name, identity.provider,
                             identity.subject))
            cur.execute("UPDATE accounts SET seen_at = now() WHERE id = %s"
                        " RETURNING name, email", (account,))
            name, email = cur.fetchone()
            cur.execute("INSERT INTO signins (token_hash, account, provider, expires_at)"
                        f" VALUES (%s, %s, %s, now() + interval '{SIGNIN_DAYS} days')",
                        (_hash(token), account, identity.provider))
        return token, Account(account, name, email, identity.provider)

    def account(self, token: str | None) -> Account | None:
        """Whose sign-in ``token`` is, if it is a live one."""
        if not token or len(token) > 200:
            return None
        rows = self.db.execute(
            "SELECT a.id, a.name, a.email, s.provider FROM signins s"
            " JOIN accounts a ON a.id = s.account"
            " WHERE s.token_hash = %s AND s.ended_at IS NULL AND s.expires_at > now()",
            (_hash(token),))
        return Account(*rows[0]) if rows else None

    def sign_out(self, token: str) -> None:
        self.db.execute("UPDATE signins SET ended_at = now()"
                        " WHERE token_hash = %s AND ended_at IS NULL", (_hash(token),))

    def csrf_token(self, token: str) -> str:
        return hmac.new(self.secret, b"csrf:" + token.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, token: str, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(self.csrf_token(token), given)
