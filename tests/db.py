"""Database access for tests: the appliance's own DSN, plain SQL."""

from __future__ import annotations

from pathlib import Path

import psycopg2


def connect(data: Path):
    conn = psycopg2.connect((data / "secrets" / "dsn").read_text().strip(), connect_timeout=5)
    conn.autocommit = True
    return conn


def query(data: Path, sql: str, params=()) -> list[tuple]:
    return query_dsn((data / "secrets" / "dsn").read_text().strip(), sql, params)


def query_dsn(dsn: str, sql: str, params=()) -> list[tuple]:
    conn = psycopg2.connect(dsn, connect_timeout=5)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def current(data: Path, name: str) -> tuple | None:
    rows = query(data, "SELECT state, pid FROM components WHERE name = %s", (name,))
    return rows[0] if rows else None


def events(data: Path, name: str) -> list[tuple]:
    return query(
        data,
        "SELECT state, pid, source FROM component_events WHERE name = %s ORDER BY id",
        (name,),
    )
