"""The frontend's database access: plain SQL over psycopg2, gevent-cooperative,
and never a reason for the frontend to hang.

``psycogreen`` installs psycopg2's wait callback for gevent, so a query yields
to other greenlets instead of blocking the whole frontend. Every call is
bounded: connecting (``connect_timeout``), waiting for a pooled connection,
and the query itself, by the server (``statement_timeout``) and by us (a
gevent timeout, which also holds when the server is SIGSTOPped and answers
nothing). A failure opens a short circuit: for a moment calls fail at once
instead of each waiting for the same dead server, then one is let through.
Every such failure is a ``DatabaseUnavailable``, which routes turn into a 503.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import gevent
import psycopg2
from gevent.lock import Semaphore
from gevent.queue import Empty, LifoQueue

CONNECT_TIMEOUT = 3  # seconds (libpq takes whole seconds)
QUERY_TIMEOUT = 5.0  # seconds, ours; the server's statement_timeout is a little less
POOL_WAIT = 3.0  # seconds to wait for a free pooled connection
RETRY_AFTER = 2.0  # seconds calls fail at once after a failure


class DatabaseUnavailable(Exception):
    """The database did not answer in time (or refused): try again later."""


def make_cooperative() -> None:
    from psycogreen.gevent import patch_psycopg

    patch_psycopg()


class Database:
    """A small pool of connections to the DSN in ``dsn_file``."""

    def __init__(self, dsn_file: str | Path | None, size: int = 4):
        self.dsn_file = Path(dsn_file) if dsn_file else None
        self.size = size
        self.idle: LifoQueue = LifoQueue()
        self.created = 0
        self.lock = Semaphore()
        self.down_until = 0.0

    @property
    def configured(self) -> bool:
        return self.dsn_file is not None

    def _connect(self):
        statement_ms = int(QUERY_TIMEOUT * 1000) - 500
        return psycopg2.connect(self.dsn_file.read_text().strip(),
                                connect_timeout=CONNECT_TIMEOUT,
                                options=f"-c statement_timeout={statement_ms}",
                                keepalives=1, keepalives_idle=5, keepalives_interval=2,
                                keepalives_count=2)

    def _take(self):
        with self.lock:
            if self.idle.empty() and self.created < self.size:
                self.created += 1
                try:
                    return self._connect()
                except Exception:
                    self.created -= 1
                    raise
        try:
            return self.idle.get(timeout=POOL_WAIT)
        except Empty:
            raise DatabaseUnavailable("every database connection is busy") from None

    def _discard(self, conn) -> None:
        self.created -= 1
        with contextlib.suppress(Exception):
            conn.close()

    @contextlib.contextmanager
    def connection(self):
        if not self.configured:
            raise RuntimeError("no database configured for this frontend")
        if time.monotonic() < self.down_until:
            raise DatabaseUnavailable("the database is unavailable")
        try:
            with gevent.Timeout(CONNECT_TIMEOUT + 1):
                conn = self._take()
        except (psycopg2.OperationalError, psycopg2.InterfaceError, gevent.Timeout) as exc:
            self._failed()
            raise DatabaseUnavailable(_first_line(exc)) from None
        try:
            with gevent.Timeout(QUERY_TIMEOUT):
                yield conn
                conn.commit()
        except (psycopg2.OperationalError, psycopg2.InterfaceError, gevent.Timeout) as exc:
            # The connection's state is unknown (a query may be half-done on
            # a server that does not answer): it is not reused.
            self._discard(conn)
            self._failed()
            raise DatabaseUnavailable(_first_line(exc)) from None
        except BaseException:
            with contextlib.suppress(Exception), gevent.Timeout(1):
                conn.rollback()
            if conn.closed:
                self._discard(conn)
            else:
                self.idle.put(conn)
            raise
        self.down_until = 0.0
        self.idle.put(conn)

    def _failed(self) -> None:
        self.down_until = time.monotonic() + RETRY_AFTER

    def execute(self, sql: str, params=()) -> list[tuple]:
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else []


def _first_line(exc: BaseException) -> str:
    if isinstance(exc, gevent.Timeout):
        return "the database did not answer in time"
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
