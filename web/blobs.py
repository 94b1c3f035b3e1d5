"""Content-addressed blobs in PostgreSQL: store before announcing, serve forever.

Only the image types of the worker protocol are stored or served as
themselves: a session's output must never come back from our origin as a
page (text/html) or anything a browser would run.
"""

from __future__ import annotations

import hashlib
import re

import psycopg2

from sage_worker.protocol import IMAGE_MIMES
from web.db import Database

SHA1 = re.compile(r"[0-9a-f]{40}\Z")  # \Z: "$" would let a final newline through
SAFE_FALLBACK = "application/octet-stream"


def store(db: Database, data: bytes, mime: str) -> str:
    """Insert (idempotently) and return the sha1 that names the blob; a blob
    that is not the image its type says is refused (ValueError)."""
    if mime not in IMAGE_MIMES:
        raise ValueError(f"blobs are images ({', '.join(IMAGE_MIMES)}), not {mime[:60]!r}")
    if not looks_like(data, mime):
        raise ValueError(f"its bytes are not {mime}")
    sha1 = hashlib.sha1(data).hexdigest()
    db.execute("INSERT INTO blobs (sha1, mime, data) VALUES (%s, %s, %s) "
               "ON CONFLICT (sha1) DO NOTHING", (sha1, mime, psycopg2.Binary(data)))
    return sha1


def load(db: Database, sha1: str) -> tuple[str, bytes] | None:
    if not SHA1.match(sha1):
        return None
    rows = db.execute("SELECT mime, data FROM blobs WHERE sha1 = %s", (sha1,))
    return (rows[0][0], bytes(rows[0][1])) if rows else None


def looks_like(data: bytes, mime: str) -> bool:
    """A PNG's signature; an SVG's root element near its start."""
    if mime == "image/png":
        return data.startswith(b"\x89PNG\r\n\x1a\n")
    return b"<svg" in data[:4096]


def served_as(mime: str) -> str:
    """The type a stored blob is served with: an allowed image type, else bytes."""
    return mime if mime in IMAGE_MIMES else SAFE_FALLBACK


def url(sha1: str) -> str:
    return f"/blobs/{sha1}"
