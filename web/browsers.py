"""The ``browsers`` table: where each open websocket is (sql/004_browsers.sql).

The frontend keeps the rows it owns in memory and a greenlet writes what
changed (web/writer.py), so a websocket never waits for the database. Before its
first write, a frontend removes the rows a previous process of the same name
left behind (one killed before it could remove them); the registry listener
and ``salvusctl check`` clear such rows too, when no frontend comes back.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from web.db import Database
from web.writer import Writer


@dataclass
class Row:
    id: str
    browser: str
    session: str | None
    connected_at: datetime


@dataclass(frozen=True)
class Place:
    """Who this frontend is in the table."""

    instance: str
    host: str
    frontend: str
    pid: int

    @classmethod
    def here(cls, instance: str, host: str, frontend: str) -> Place:
        return cls(instance, host, frontend, os.getpid())


class BrowserTable(Writer):
    what = "browsers table"

    def __init__(self, db: Database, place: Place, say: Callable[[str], None]):
        super().__init__(db, say)
        self.place = place
        self.rows: dict[str, Row] = {}
        self.changes: set[str] = set()  # ids whose row must be written (or removed)
        self.cleaned = False  # rows of our previous processes are gone

    # -- what the websockets do (never waits)

    def connected(self, connection_id: str, browser: str) -> None:
        self.rows[connection_id] = Row(connection_id, browser, None, datetime.now(UTC))
        self._changed(connection_id)

    def followed(self, connection_id: str, session: str) -> None:
        row = self.rows.get(connection_id)
        if row is not None and row.session != session:
            row.session = session
            self._changed(connection_id)

    def closed(self, connection_id: str) -> None:
        if self.rows.pop(connection_id, None) is not None:
            self._changed(connection_id)

    def _changed(self, connection_id: str) -> None:
        self.changes.add(connection_id)
        self.changed()

    # -- writing

    def sync(self, refresh: bool = False) -> None:
        """Write what changed (and every row's last_seen when ``refresh``)."""
        p = self.place
        where = "instance = %s AND host = %s AND frontend = %s"
        ids = set(self.changes)
        self.changes -= ids
        try:
            with self.db.connection() as conn, conn.cursor() as cur:
                if not self.cleaned:
                    cur.execute(f"DELETE FROM browsers WHERE {where} AND pid <> %s",
                                (p.instance, p.host, p.frontend, p.pid))
                    if cur.rowcount:
                        self.say(f"browsers table: removed {cur.rowcount} rows a previous "
                                 f"{p.frontend} left")
                gone = [i for i in ids if i not in self.rows]
                if gone:
                    cur.execute("DELETE FROM browsers WHERE id = ANY(%s)", (gone,))
                for i in ids - set(gone):
                    row = self.rows[i]
                    cur.execute(
                        "INSERT INTO browsers (id, browser, session, instance, host, frontend,"
                        " pid, connected_at, last_seen) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,now())"
                        " ON CONFLICT (id) DO UPDATE SET session = EXCLUDED.session,"
                        " last_seen = now()",
                        (row.id, row.browser, row.session, p.instance, p.host, p.frontend,
                         p.pid, row.connected_at))
                if refresh:
                    cur.execute(f"UPDATE browsers SET last_seen = now() WHERE {where} "
                                "AND pid = %s", (p.instance, p.host, p.frontend, p.pid))
        except BaseException:
            self.changes |= ids  # written next time
            raise
        self.cleaned = True
