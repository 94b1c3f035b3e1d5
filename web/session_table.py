"""The ``sessions`` table (sql/005_sessions.sql): each session's worker,
owner, state and last activity, as the frontends serving it see them.

Recording never waits for the database (web/writer.py): the newest state of
each session waits in memory and is written by the writer's greenlet.
"""

from __future__ import annotations

from collections.abc import Callable

from web.db import Database
from web.writer import Writer


class SessionTable(Writer):
    what = "sessions table"

    def __init__(self, db: Database, say: Callable[[str], None]):
        super().__init__(db, say)
        self.changes: dict[str, dict] = {}  # id -> what to write (the newest wins)

    def record(self, session: str, owner: str, state: str, worker: str | None) -> None:
        """Where ``session`` is now; also marks activity."""
        self.changes[session] = {"owner": owner, "state": state, "worker": worker}
        self.changed()

    def sync(self, refresh: bool = False) -> None:
        changes, self.changes = self.changes, {}
        try:
            with self.db.connection() as conn, conn.cursor() as cur:
                for session, row in changes.items():
                    cur.execute(
                        "INSERT INTO sessions (id, worker, owner, state) VALUES (%s,%s,%s,%s)"
                        " ON CONFLICT (id) DO UPDATE SET worker = COALESCE(EXCLUDED.worker,"
                        " sessions.worker), state = EXCLUDED.state, last_activity = now()",
                        (session, row["worker"], row["owner"], row["state"]))
        except BaseException:
            for session, row in changes.items():
                self.changes.setdefault(session, row)  # newer ones win
            raise
