"""The ``browsers`` table: where each open websocket is (sql/004_browsers.sql).

The frontend keeps the rows it owns in memory and a greenlet writes what
changed, so a websocket never waits for the database: when PostgreSQL is
down or slow, changes wait in memory (one entry per websocket, whatever
happened to it meanwhile) and are written when it answers again. Before its
first write, a frontend removes the rows a previous process of the same name
left behind (one killed before it could remove them); the registry listener
and ``salvusctl check`` clear such rows too, when no frontend comes back.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import gevent
from gevent.event import Event

from web.db import Database, DatabaseUnavailable

SYNC_EVERY = 0.2  # seconds between two writes of what changed, at most
SEEN_EVERY = 30.0  # seconds between two refreshes of every row's last_seen


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


class BrowserTable:
    def __init__(self, db: Database, place: Place, say: Callable[[str], None]):
        self.db = db
        self.place = place
        self.say = say
        self.rows: dict[str, Row] = {}
        self.changed: set[str] = set()  # ids whose row must be written (or removed)
        self.cleaned = False  # rows of our previous processes are gone
        self.wake = Event()
        self.down = False
        self.greenlet = None

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
        self.changed.add(connection_id)
        self.wake.set()

    # -- writing

    def start(self) -> None:
        if self.db.configured:
            self.wake.set()  # at once: the rows our previous process left go first
            self.greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        if self.greenlet is not None:
            self.greenlet.kill()

    def _run(self) -> None:
        seen_at = 0.0
        while True:
            self.wake.wait(timeout=SEEN_EVERY)
            self.wake.clear()
            now = gevent.get_hub().loop.now()
            refresh = now - seen_at >= SEEN_EVERY
            try:
                self.sync(refresh)
                if refresh:
                    seen_at = now
            except DatabaseUnavailable as exc:
                if not self.down:
                    self.say(f"browsers table: database unavailable ({exc}); "
                             "keeping changes until it answers")
                self.down = True
                gevent.sleep(1.0)
                self.wake.set()  # try again
                continue
            except Exception as exc:  # a schema not migrated yet, a bug: never our end
                self.say(f"browsers table: could not write ({exc!r}); retrying in 5 s")
                gevent.sleep(5.0)
                self.wake.set()
                continue
            if self.down:
                self.say("browsers table: database reachable again; rows written")
                self.down = False
            gevent.sleep(SYNC_EVERY)

    def sync(self, refresh_all: bool = False) -> None:
        """Write what changed (and every row's last_seen when ``refresh_all``)."""
        p = self.place
        where = "instance = %s AND host = %s AND frontend = %s"
        ids = set(self.changed)
        self.changed -= ids
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
                if refresh_all:
                    cur.execute(f"UPDATE browsers SET last_seen = now() WHERE {where} "
                                "AND pid = %s", (p.instance, p.host, p.frontend, p.pid))
        except BaseException:
            self.changed |= ids  # written next time
            raise
        self.cleaned = True
