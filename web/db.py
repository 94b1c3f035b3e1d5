"""The frontend's database access: plain SQL over psycopg2, gevent-cooperative.

``psycogreen`` installs psycopg2's wait callback for gevent, so a query
yields to other greenlets instead of blocking the whole frontend.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import psycopg2
from gevent.lock import Semaphore
from gevent.queue import LifoQueue


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

    @property
    def configured(self) -> bool:
        return self.dsn_file is not None

    def _connect(self):
        return psycopg2.connect(self.dsn_file.read_text().strip(), connect_timeout=3)

    @contextlib.contextmanager
    def connection(self):
        if not self.configured:
            raise RuntimeError("no database configured for this frontend")
        with self.lock:
            if self.idle.empty() and self.created < self.size:
                self.created += 1
                try:
                    conn = self._connect()
                except Exception:
                    self.created -= 1
                    raise
            else:
                conn = None
        conn = conn or self.idle.get()
        try:
            yield conn
            conn.commit()
        except Exception:
            with contextlib.suppress(Exception):
                conn.rollback()
            if conn.closed:
                self.created -= 1
                conn = None
            raise
        finally:
            if conn is not None and not conn.closed:
                self.idle.put(conn)
            elif conn is not None:
                self.created -= 1

    def execute(self, sql: str, params=()) -> list[tuple]:
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else []
