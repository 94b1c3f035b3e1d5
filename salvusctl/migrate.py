"""Plain-SQL migrations: ``sql/NNN_name.sql`` applied in order, once each.

Each file runs in its own transaction together with its row in the series'
ledger (``schema_migrations``; version, name, sha256 of the file, time), so a
file is either applied and recorded or not at all. ``sql/logs/`` is a series
of its own (ledger ``log_schema_migrations``), applied to the log database.
An applied file that changed since is refused. A session-level advisory lock
serializes concurrent runs.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg2

from salvusctl.errors import MigrationError

FILENAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
# An arbitrary constant shared by every salvusctl: "salvus" in ASCII.
LOCK_KEY = 0x73616C767573

LEDGER = "schema_migrations"
LOG_LEDGER = "log_schema_migrations"
BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS {ledger} (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path
    checksum: str

    @property
    def sql(self) -> str:
        return self.path.read_text()


def discover(folder: Path) -> list[Migration]:
    found: dict[int, Migration] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix != ".sql":
            continue
        match = FILENAME.match(path.name)
        if not match:
            raise MigrationError(
                f"migration file {path.name} is misnamed; name it NNN_lowercase_words.sql"
            )
        version = int(match.group(1))
        if version in found:
            raise MigrationError(
                f"migrations {found[version].path.name} and {path.name} share number "
                f"{version:03d}; renumber one of them"
            )
        checksum = hashlib.sha256(path.read_bytes()).hexdigest()
        found[version] = Migration(version, match.group(2), path, checksum)
    return [found[v] for v in sorted(found)]


def applied(conn, ledger: str = LEDGER) -> dict[int, tuple[str, str]]:
    with conn.cursor() as cur:
        cur.execute(f"SELECT version, name, checksum FROM {ledger}")
        return {v: (n, c) for v, n, c in cur.fetchall()}


def pending(conn, migrations: list[Migration], ledger: str = LEDGER) -> list[Migration]:
    """Migrations still to run; refuse when an applied file was edited."""
    done = applied(conn, ledger)
    for m in migrations:
        if m.version in done and done[m.version][1] != m.checksum:
            raise MigrationError(
                f"migration {m.path.name} was edited after it was applied; restore the "
                "applied version and put the change in a new migration file"
            )
    return [m for m in migrations if m.version not in done]


def migrate(conn, folder: Path, say: Callable[[str], None] = lambda _: None,
            ledger: str = LEDGER) -> list[Migration]:
    """Apply every pending migration of ``folder`` (its series is recorded in
    the table ``ledger``); return those applied by this call."""
    migrations = discover(folder)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
    try:
        with conn.cursor() as cur:
            cur.execute(BOOTSTRAP.format(ledger=ledger))
        conn.autocommit = False
        todo = pending(conn, migrations, ledger)
        conn.rollback()
        for m in todo:
            say(f"applying migration {m.path.name}")
            _apply(conn, m, ledger)
        return todo
    finally:
        conn.rollback()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))


def _apply(conn, m: Migration, ledger: str) -> None:
    try:
        with conn.cursor() as cur:
            cur.execute(m.sql)
            cur.execute(
                f"INSERT INTO {ledger} (version, name, checksum) VALUES (%s, %s, %s)",
                (m.version, m.name, m.checksum),
            )
        conn.commit()
    except psycopg2.Error as exc:
        conn.rollback()
        first = (str(exc).strip().splitlines() or ["no detail"])[0]
        raise MigrationError(
            f"migration {m.path.name} failed and was rolled back: {first}; fix the file and "
            "run `salvusctl db migrate` again"
        ) from None
