"""The registry listener as a real process, spoken to as supervisord does."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys

import psycopg2
import pytest

from salvusctl import migrate
from salvusctl.resources import sql_dir


class FakeSupervisord:
    """The supervisord side of the event listener protocol, over real pipes."""

    def __init__(self, folder, dsn: str, buffer: int = 100):
        (folder / "dsn").write_text(dsn)
        self.spool = folder / "spool"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "salvusctl.listener", "--instance", "t1", "--host", "h1",
             "--dsn-file", str(folder / "dsn"), "--spool", str(self.spool),
             "--buffer", str(buffer)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.serial = 0
        self.expect(b"READY\n")

    def expect(self, wanted: bytes, timeout: float = 10) -> None:
        got = b""
        fd = self.proc.stdout.fileno()
        while len(got) < len(wanted):
            readable, _, _ = select.select([fd], [], [], timeout)
            assert readable, f"listener did not answer {wanted!r} within {timeout}s (got {got!r})"
            chunk = os.read(fd, len(wanted) - len(got))
            assert chunk, f"listener closed its stdout (got {got!r})"
            got += chunk
        assert got == wanted

    def send(self, state: str, name: str, pid: int | None = None) -> None:
        self.serial += 1
        payload = f"processname:{name} groupname:{name} from_state:STARTING"
        if pid:
            payload += f" pid:{pid}"
        header = (f"ver:3.0 server:supervisor serial:{self.serial} pool:registry "
                  f"poolserial:{self.serial} eventname:PROCESS_STATE_{state} "
                  f"len:{len(payload)}\n")
        self.proc.stdin.write(header.encode() + payload.encode())
        self.proc.stdin.flush()
        self.expect(b"RESULT 2\nOK")
        self.expect(b"READY\n")

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        assert self.proc.returncode == 0, err
        return err.decode()


@pytest.fixture
def listeners():
    started = []
    yield lambda *a, **k: started.append(FakeSupervisord(*a, **k)) or started[-1]
    for listener in started:
        if listener.proc.poll() is None:
            listener.proc.kill()
            listener.proc.wait()
        for pipe in (listener.proc.stdin, listener.proc.stdout, listener.proc.stderr):
            pipe.close()


@pytest.fixture
def registry_db(fresh_db):
    conn = psycopg2.connect(fresh_db)
    migrate.migrate(conn, sql_dir())
    conn.close()
    return fresh_db


def rows(dsn: str, sql: str) -> list[tuple]:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        conn.close()


DOWN = "host=127.0.0.1 port=1 dbname=x user=x connect_timeout=1"


def test_events_reach_the_database(make_folder, listeners, registry_db):
    listener = listeners(make_folder(), registry_db)
    listener.send("STARTING", "web0")
    listener.send("RUNNING", "web0", pid=4242)
    listener.stop()
    assert rows(registry_db, "SELECT name, kind, host, state, pid FROM component_events"
                             " ORDER BY id") == [
        ("web0", "web", "h1", "STARTING", None), ("web0", "web", "h1", "RUNNING", 4242)]
    assert rows(registry_db, "SELECT instance, state, pid FROM components") == [
        ("t1", "RUNNING", 4242)]


def test_database_away_never_blocks_and_nothing_is_lost(make_folder, listeners,
                                                        registry_db):
    folder = make_folder()
    first = listeners(folder, DOWN)
    for i in range(5):
        first.send("RUNNING", f"worker{i}", pid=100 + i)  # each acked at once
    log = first.stop()
    assert "database not reachable" in log and "spooled 5 events" in log
    assert len(first.spool.read_text().splitlines()) == 5

    second = listeners(folder, registry_db)
    second.send("STOPPED", "worker0", pid=100)
    second.stop()
    assert not first.spool.exists()
    assert rows(registry_db, "SELECT name, state FROM component_events ORDER BY id") == [
        *((f"worker{i}", "RUNNING") for i in range(5)), ("worker0", "STOPPED")]
    assert rows(registry_db, "SELECT state, pid FROM components WHERE name = 'worker0'") == [
        ("STOPPED", None)]


def test_buffer_is_bounded_and_drops_are_counted(make_folder, listeners):
    listener = listeners(make_folder(), DOWN, buffer=10)
    for i in range(15):
        listener.send("RUNNING", f"web{i}", pid=i + 1)
    log = listener.stop()
    assert "dropped the oldest event (5 so far)" in log
    spooled = [json.loads(line)["name"] for line in listener.spool.read_text().splitlines()]
    assert spooled == [f"web{i}" for i in range(5, 15)]


def test_damaged_spool_lines_are_skipped_not_fatal(make_folder, listeners, registry_db):
    folder = make_folder()
    (folder / "spool").write_text("{not json\n")
    listener = listeners(folder, registry_db)
    listener.send("RUNNING", "web0", pid=7)
    log = listener.stop()
    assert "skipped a damaged spool line" in log
    assert rows(registry_db, "SELECT name FROM component_events") == [("web0",)]
