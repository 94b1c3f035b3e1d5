"""Content-addressed blobs in PostgreSQL: store before announcing, serve forever."""

from __future__ import annotations

import hashlib
import re

import psycopg2

from web.db import Database

SHA1 = re.compile(r"^[0-9a-f]{40}$")


def store(db: Database, data: bytes, mime: str) -> str:
    """Insert (idempotently) and return the sha1 that names the blob."""
    sha1 = hashlib.sha1(data).hexdigest()
    db.execute("INSERT INTO blobs (sha1, mime, data) VALUES (%s, %s, %s) "
               "ON CONFLICT (sha1) DO NOTHING", (sha1, mime, psycopg2.Binary(data)))
    return sha1


def load(db: Database, sha1: str) -> tuple[str, bytes] | None:
    if not SHA1.match(sha1):
        return None
    rows = db.execute("SELECT mime, data FROM blobs WHERE sha1 = %s", (sha1,))
    return (rows[0][0], bytes(rows[0][1])) if rows else None


def url(sha1: str) -> str:
    return f"/blobs/{sha1}"
