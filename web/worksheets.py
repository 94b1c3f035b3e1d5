"""Saved worksheets and their versions (sql/009_worksheets.sql).

A version is the worksheet whole, as the page shows it::

    {"language": "sage" | "python",
     "cells": [{"type": "code" | "markdown", "code": str, "outputs": [output, ...]}]}

with outputs in web/notebooks.py's shapes (stream, result, image, error,
notice); images are links to blobs (``/blobs/<sha1>``), which stay. Results'
HTML is sanitized again on the way in: a version is what its page sent.

Every query names the account: a worksheet of another account is "not found",
never "forbidden", so its existence does not leak either. Saving takes the
worksheet's row lock to number the version (``head + 1``): saves at once each
get their own number, and none is lost. A save equal to the newest version
adds nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass

from web import html, notebooks
from web.db import Database

MAX_TITLE = 200
BLOB_URL = re.compile(r"/blobs/[0-9a-f]{40}\Z")
UNTITLED = "Untitled"


class WorksheetError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


NOT_FOUND = WorksheetError(404, "no such worksheet in your account")


@dataclass(frozen=True)
class Summary:
    id: str
    title: str
    head: int
    updated_at: str

    def to_json(self) -> dict:
        return {"id": self.id, "title": self.title, "versions": self.head,
                "updated_at": self.updated_at}


def content(body) -> dict:
    """The version to store from what a page sent; bad input refused."""
    try:
        sheet = notebooks.worksheet({**body, "format": "ipynb"} if isinstance(body, dict)
                                    else body)
    except notebooks.NotebookError as err:
        message = err.message.replace("nothing to download yet", "nothing to save yet")
        raise WorksheetError(err.status, message.replace("a download holds",
                                                         "a worksheet holds")) from None
    cells = []
    for cell in sheet.cells:
        outputs = []
        for output in cell.outputs:
            if output["type"] == "image" and not BLOB_URL.match(output["url"]):
                raise WorksheetError(400, "an image output must link to /blobs/<sha1>")
            if output["type"] == "result":
                output = {**output, "data": html.clean_result(output["data"])}
            outputs.append(output)
        cells.append({"type": cell.kind, "code": cell.source, "outputs": outputs})
    text = json.dumps({"language": sheet.language, "cells": cells})
    if len(text) > notebooks.MAX_BYTES:
        raise WorksheetError(413, f"the worksheet is {len(text)} bytes; one holds at most "
                                  f"{notebooks.MAX_BYTES}")
    return {"language": sheet.language, "cells": cells}


def _digest(value: dict) -> bytes:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).digest()


def title_of(value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise WorksheetError(400, 'send {"title": "a name"} (not empty)')
    return " ".join(value.split())[:MAX_TITLE]


class Worksheets:
    def __init__(self, db: Database):
        self.db = db

    def create(self, account: str, title: str, value: dict | None) -> tuple[str, int]:
        """A new worksheet (with ``value`` as version 1, if given): (id, head)."""
        sheet = "w" + secrets.token_urlsafe(12)
        with self.db.connection() as conn, conn.cursor() as cur:
            cur.execute("INSERT INTO worksheets (id, account, title) VALUES (%s, %s, %s)",
                        (sheet, account, title))
            head = self._add(cur, sheet, value) if value is not None else 0
        return sheet, head

    def save(self, account: str, sheet: str, value: dict,
             restored_from: int | None = None) -> tuple[int, bool]:
        """(the newest version's number, whether this save made it)."""
        with self.db.connection() as conn, conn.cursor() as cur:
            cur.execute("SELECT head FROM worksheets WHERE id = %s AND account = %s"
                        " AND deleted_at IS NULL FOR UPDATE", (sheet, account))
            row = cur.fetchone()
            if row is None:
                raise NOT_FOUND
            cur.execute("SELECT digest FROM worksheet_versions WHERE worksheet = %s"
                        " AND version = %s", (sheet, row[0]))
            newest = cur.fetchone()
            if newest is not None and bytes(newest[0]) == _digest(value) \
                    and restored_from is None:
                return row[0], False
            return self._add(cur, sheet, value, restored_from), True

    def _add(self, cur, sheet: str, value: dict, restored_from: int | None = None) -> int:
        cur.execute("UPDATE worksheets SET head = head + 1, updated_at = now()"
                    " WHERE id = %s RETURNING head", (sheet,))
        head = cur.fetchone()[0]
        cur.execute("INSERT INTO worksheet_versions (worksheet, version, content, digest,"
                    " restored_from) VALUES (%s, %s, %s, %s, %s)",
                    (sheet, head, json.dumps(value), _digest(value), restored_from))
        return head

    def listing(self, account: str) -> list[Summary]:
        rows = self.db.execute(
            "SELECT id, title, head, to_char(updated_at AT TIME ZONE 'UTC',"
            " 'YYYY-MM-DD HH24:MI:SS') FROM worksheets WHERE account = %s"
            " AND deleted_at IS NULL ORDER BY updated_at DESC", (account,))
        return [Summary(*row) for row in rows]

    def open(self, account: str, sheet: str, version: int | None = None
             ) -> tuple[Summary, int, dict]:
        """(the worksheet, the version's number, its content); the newest by default."""
        rows = self.db.execute(
            "SELECT w.id, w.title, w.head, to_char(w.updated_at AT TIME ZONE 'UTC',"
            " 'YYYY-MM-DD HH24:MI:SS'), v.version, v.content FROM worksheets w"
            " LEFT JOIN worksheet_versions v ON v.worksheet = w.id"
            " AND v.version = COALESCE(%s, w.head)"
            " WHERE w.id = %s AND w.account = %s AND w.deleted_at IS NULL",
            (version, sheet, account))
        if not rows or (version is not None and rows[0][4] is None):
            raise NOT_FOUND if not rows else WorksheetError(404, f"no version {version}")
        summary = Summary(*rows[0][:4])
        return summary, rows[0][4] or 0, rows[0][5] or {"language": "sage", "cells": []}

    def versions(self, account: str, sheet: str) -> list[dict]:
        rows = self.db.execute(
            "SELECT v.version, to_char(v.saved_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'),"
            " jsonb_array_length(v.content->'cells'), v.restored_from"
            " FROM worksheet_versions v JOIN worksheets w ON w.id = v.worksheet"
            " WHERE w.id = %s AND w.account = %s AND w.deleted_at IS NULL"
            " ORDER BY v.version DESC", (sheet, account))
        if not rows:
            self.open(account, sheet)  # raises when there is no such worksheet
        return [{"version": v, "saved_at": at, "cells": n, "restored_from": r}
                for v, at, n, r in rows]

    def rename(self, account: str, sheet: str, title: str) -> None:
        rows = self.db.execute("UPDATE worksheets SET title = %s WHERE id = %s AND account = %s"
                               " AND deleted_at IS NULL RETURNING id", (title, sheet, account))
        if not rows:
            raise NOT_FOUND

    def copy(self, account: str, sheet: str) -> str:
        summary, _, value = self.open(account, sheet)
        copied, _ = self.create(account, f"Copy of {summary.title}"[:MAX_TITLE], value)
        return copied

    def delete(self, account: str, sheet: str) -> None:
        rows = self.db.execute("UPDATE worksheets SET deleted_at = now() WHERE id = %s"
                               " AND account = %s AND deleted_at IS NULL RETURNING id",
                               (sheet, account))
        if not rows:
            raise NOT_FOUND

    def restore(self, account: str, sheet: str, version: int) -> int:
        """A new newest version equal to ``version`` (history is never rewritten)."""
        _, _, value = self.open(account, sheet, version)
        head, _ = self.save(account, sheet, value, restored_from=version)
        return head
