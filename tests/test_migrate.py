"""Plain-SQL migrations against a real PostgreSQL, a fresh database per test."""

from __future__ import annotations

import threading

import psycopg2
import pytest

from salvusctl import migrate
from salvusctl.errors import MigrationError
from salvusctl.resources import sql_dir


@pytest.fixture
def folder(make_folder):
    return make_folder("salvus-sql-")


@pytest.fixture
def conn(fresh_db):
    connection = psycopg2.connect(fresh_db)
    yield connection
    connection.close()


def versions(conn) -> list[int]:
    with conn.cursor() as cur:
        cur.execute("SELECT version FROM schema_migrations ORDER BY version")
        return [v for (v,) in cur.fetchall()]


def tables(conn) -> set[str]:
    with conn.cursor() as cur:
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {t for (t,) in cur.fetchall()}


def test_project_migrations_apply_in_order_and_only_once(conn):
    said = []
    first = migrate.migrate(conn, sql_dir(), said.append)
    assert [m.version for m in first] == sorted(m.version for m in first) and first
    assert said == [f"applying migration {m.path.name}" for m in first]
    assert {"components", "component_events", "schema_migrations"} <= tables(conn)
    assert migrate.migrate(conn, sql_dir()) == []
    assert versions(conn) == [m.version for m in first]


def test_checksums_are_recorded(conn, folder):
    (folder / "001_a.sql").write_text("CREATE TABLE a (x int);")
    [m] = migrate.migrate(conn, folder)
    with conn.cursor() as cur:
        cur.execute("SELECT name, checksum FROM schema_migrations")
        assert cur.fetchall() == [("a", m.checksum)]


def test_an_edited_applied_migration_is_refused(conn, folder):
    (folder / "001_a.sql").write_text("CREATE TABLE a (x int);")
    migrate.migrate(conn, folder)
    (folder / "001_a.sql").write_text("CREATE TABLE a (x int, y int);")
    (folder / "002_b.sql").write_text("CREATE TABLE b (x int);")
    with pytest.raises(MigrationError, match=r"001_a\.sql was edited after it was applied"):
        migrate.migrate(conn, folder)
    assert versions(conn) == [1]
    assert "b" not in tables(conn)


def test_a_failing_migration_is_rolled_back_whole(conn, folder):
    (folder / "001_a.sql").write_text("CREATE TABLE a (x int);")
    (folder / "002_b.sql").write_text("CREATE TABLE b (x int);\nSELECT no_such_function();")
    with pytest.raises(MigrationError, match=r"002_b\.sql failed and was rolled back"):
        migrate.migrate(conn, folder)
    assert versions(conn) == [1]
    assert "b" not in tables(conn)
    (folder / "002_b.sql").write_text("CREATE TABLE b (x int);")
    assert [m.version for m in migrate.migrate(conn, folder)] == [2]


@pytest.mark.parametrize("names, message", [
    (["1_a.sql"], "misnamed"),
    (["001_A.sql"], "misnamed"),
    (["001_a.sql", "001_b.sql"], "share number 001"),
])
def test_bad_file_names_are_refused(conn, folder, names, message):
    for name in names:
        (folder / name).write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=message):
        migrate.migrate(conn, folder)


def test_concurrent_runs_are_serialized(fresh_db, folder):
    (folder / "001_slow.sql").write_text("SELECT pg_sleep(0.3); CREATE TABLE a (x int);")
    (folder / "002_b.sql").write_text("CREATE TABLE b (x int);")
    results, errors = [], []

    def run_one():
        connection = psycopg2.connect(fresh_db)
        try:
            results.append(len(migrate.migrate(connection, folder)))
        except Exception as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sorted(results) == [0, 0, 0, 2]
