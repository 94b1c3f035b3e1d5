"""Permalinks: store a worksheet's cells under a short random id.

Ids are letters only (8 of them: 52^8 ≈ 5e13), drawn at random and retried on
a collision, never sequential. The same content always gets the same id.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import string

import gevent
import psycopg2

from web.db import Database

ALPHABET = string.ascii_letters
ID_LENGTH = 8
MAX_CONTENT = 256 << 10  # bytes of JSON
MAX_CELLS = 500


class ShareError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def normalize(body) -> dict:
    """The stored form: {"engine": ..., "cells": [{"code": ...}]}; bad input refused."""
    if not isinstance(body, dict) or not isinstance(body.get("cells"), list):
        raise ShareError(400, "send {\"cells\": [{\"code\": ...}, ...]}")
    cells = body["cells"]
    if not cells or len(cells) > MAX_CELLS:
        raise ShareError(400, f"share 1 to {MAX_CELLS} cells")
    if not all(isinstance(c, dict) and isinstance(c.get("code"), str) for c in cells):
        raise ShareError(400, "every cell needs its 'code' as a string")
    for c in cells:
        values = c.get("interacts", [])
        if not (isinstance(values, list) and all(
                isinstance(v, dict) and all(isinstance(x, str | int | float | bool)
                                            for x in v.values()) for v in values)):
            raise ShareError(400, "a cell's 'interacts' must be a list of {control: value}")
    engine = body.get("engine")
    if engine not in (None, "sage", "python"):
        raise ShareError(400, "'engine' must be 'sage' or 'python'")
    content = {"engine": engine, "cells": [
        {"code": c["code"], **({"interacts": c["interacts"]} if c.get("interacts") else {})}
        for c in cells]}
    try:
        size = len(json.dumps(content, allow_nan=False))  # JSON has no NaN: PostgreSQL neither
    except ValueError:
        raise ShareError(400, "interact values must be finite numbers, text or "
                         "true/false") from None
    if size > MAX_CONTENT:
        raise ShareError(413, f"the worksheet is {size} bytes; a link holds at most "
                         f"{MAX_CONTENT}")
    return content


def embeddable_json(content: dict) -> str:
    """JSON to put inside a <script type="application/json"> element of a page:
    no character that HTML could read as markup (``</script>``, ``<!--``) is
    left literal, so no cell's text can end the element or open a script."""
    text = json.dumps(content, ensure_ascii=True)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escaped)
    return text


def store(db: Database, content: dict) -> str:
    text = json.dumps(content, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(text.encode()).hexdigest()
    existing = db.execute("SELECT id FROM short_urls WHERE content_hash = %s", (digest,))
    if existing:
        return existing[0][0]
    for _ in range(10):
        link = "".join(secrets.choice(ALPHABET) for _ in range(ID_LENGTH))
        try:
            rows = db.execute(
                "INSERT INTO short_urls (id, content, content_hash) VALUES (%s, %s, %s) "
                "ON CONFLICT (content_hash) DO UPDATE SET content_hash = EXCLUDED.content_hash "
                "RETURNING id", (link, text, digest))
            return rows[0][0]
        except psycopg2.errors.UniqueViolation:
            continue  # the random id was taken: draw another
    raise ShareError(503, "could not find a free link id; try again")


def open_link(db: Database, link: str, cache=None) -> dict | None:
    """The content behind an id, counting the visit; None when there is none.
    With a cache, a hot link's content comes from memcached and the visit is
    counted in the background."""
    if not (6 <= len(link) <= 16 and link.isascii() and link.isalpha()):
        return None
    cached = cache.get(f"link:{link}") if cache else None
    if cached is not None:
        gevent.spawn(_count_visit, db, link)
        return json.loads(cached)
    rows = db.execute("UPDATE short_urls SET opened = opened + 1, last_opened = now() "
                      "WHERE id = %s RETURNING content", (link,))
    if not rows:
        return None
    if cache:
        cache.set(f"link:{link}", json.dumps(rows[0][0]).encode())
    return rows[0][0]


def _count_visit(db: Database, link: str) -> None:
    with contextlib.suppress(Exception):  # a lost count is worth no error
        db.execute("UPDATE short_urls SET opened = opened + 1, last_opened = now() "
                   "WHERE id = %s", (link,))
