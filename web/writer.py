"""A greenlet that writes a frontend's records into PostgreSQL behind its back.

Whoever records something never waits for the database: changes wait in
memory (one entry per record, whatever happened to it meanwhile) and a
greenlet writes them, at most every ``SYNC_EVERY``; while PostgreSQL is down
or slow they wait, and are written when it answers again. Subclasses say
what to write (``sync``).
"""

from __future__ import annotations

from collections.abc import Callable

import gevent
from gevent.event import Event

from web.db import Database, DatabaseUnavailable

SYNC_EVERY = 0.2  # seconds between two writes, at most
REFRESH_EVERY = 30.0  # seconds between two calls of sync(refresh=True)


class Writer:
    what = "records"  # for the log

    def __init__(self, db: Database, say: Callable[[str], None]):
        self.db = db
        self.say = say
        self.wake = Event()
        self.down = False
        self.greenlet = None

    def sync(self, refresh: bool = False) -> None:
        """Write what changed (``refresh``: also what must be refreshed now and then)."""
        raise NotImplementedError

    def changed(self) -> None:
        self.wake.set()

    def start(self) -> None:
        if self.db.configured:
            self.wake.set()  # at once: a first write may have work of its own
            self.greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        if self.greenlet is not None:
            self.greenlet.kill()

    def _run(self) -> None:
        refreshed_at = 0.0
        while True:
            self.wake.wait(timeout=REFRESH_EVERY)
            self.wake.clear()
            now = gevent.get_hub().loop.now()
            refresh = now - refreshed_at >= REFRESH_EVERY
            try:
                self.sync(refresh)
                if refresh:
                    refreshed_at = now
            except DatabaseUnavailable as exc:
                if not self.down:
                    self.say(f"{self.what}: database unavailable ({exc}); keeping changes "
                             "until it answers")
                self.down = True
                gevent.sleep(1.0)
                self.wake.set()  # try again
                continue
            except Exception as exc:  # a schema not migrated yet, a bug: never our end
                if not self.down:
                    self.say(f"{self.what}: could not write ({exc!r}); retrying every 5 s")
                self.down = True
                gevent.sleep(5.0)
                self.wake.set()
                continue
            if self.down:
                self.say(f"{self.what}: database reachable again; changes written")
                self.down = False
            gevent.sleep(SYNC_EVERY)
