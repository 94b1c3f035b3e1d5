"""Logs in PostgreSQL, end to end: a started appliance, its real supervisord,
programs and shipper, a real PostgreSQL stopped and frozen under load, the
shipper killed with SIGKILL.

"Exactly once" is checked against the files themselves: every complete line
of every program's log file is parsed as the shipper parses it, and the table
must hold the same records, each once, with the same record time.
"""

from __future__ import annotations

import logging
import os
import random
import select
import signal
import subprocess
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import psycopg2
import pytest

from salvusctl import logline, logrecords, shipper
from salvusctl.config import load
from tests import db
from tests.chaos import signal_family
from tests.helpers import (
    SALVUSCTL,
    alive,
    edit_config,
    free_base_port,
    run,
    running_pid,
    started_appliance,
    wait_for,
)
from tests.web_client import Browserish, Frontend

HEADLESS = datetime(1970, 1, 1, tzinfo=UTC)  # a first line without a time of its own


def records_in_files(data: Path) -> Counter:
    """(program, record time, message) of every complete line in the logs."""
    host = load(data / "salvus.conf").get("salvus", "host")
    found = Counter()
    for stream, paths in shipper.log_files(data / "logs").items():
        text = b"".join(path.read_bytes() for path in paths).decode("utf-8", "replace")
        before = None
        for line in text.split("\n")[:-1]:  # what follows the last newline is unfinished
            before = logrecords.read(line, stream, host, before, HEADLESS)
            found[(before.program, before.at, before.message)] += 1
    return found


def records_in_table(data: Path) -> Counter:
    rows = db.query(data, "SELECT program, at, message FROM log")
    return Counter(rows)


def same_records(data: Path) -> tuple[bool, str]:
    """Whether the table holds the files' lines exactly; if not, how not."""
    files, table = records_in_files(data), records_in_table(data)
    headless = [key for key in files if key[1] == HEADLESS]
    for key in headless:  # its row has the time it was read: match by text
        match = next((k for k in table if k[0] == key[0] and k[2] == key[2]), None)
        if match is not None:
            table[key] += table.pop(match)
    missing, extra = files - table, table - files
    return not missing and not extra, (
        f"{sum(missing.values())} lines missing (e.g. {list(missing)[:3]}), "
        f"{sum(extra.values())} extra or twice (e.g. {list(extra)[:3]})")


class Load:
    """Pages opening sessions and computing, each with its own browser, in
    threads: every page makes lines in web0 (opened, left) and in the worker
    (session started, ended). Records when each computation succeeded."""

    def __init__(self, port: int, pages: int = 3):
        self.port = port
        self.pages = pages
        self.stop = threading.Event()
        self.done: list[float] = []
        self.failures: list[str] = []
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        for index in range(self.pages):
            thread = threading.Thread(target=self.page, args=(index,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def page(self, index: int) -> None:
        count = 0
        while not self.stop.is_set():
            count += 1
            try:
                browser = Browserish(Frontend(self.port), f"browser=load{index}x{count}")
            except OSError as exc:
                self.failures.append(repr(exc))
                self.stop.wait(0.5)
                continue
            try:
                browser.open()
                for cell in ("a", "b"):
                    got = browser.run(cell, "print(6*7)", timeout=30)
                    if any(m.get("text") == "42\n" for m in got):
                        self.done.append(time.monotonic())
                browser.send(type="leave")
            except Exception as exc:  # a refusal or a timeout: counted, not fatal
                self.failures.append(repr(exc))
            finally:
                browser.close()

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)
        assert not any(t.is_alive() for t in self.threads)

    def computed_between(self, start: float, end: float) -> int:
        return sum(start <= at <= end for at in self.done)


@pytest.fixture
def appliance():
    with started_appliance("salvus-logs-", config={("web", "session_linger"): "5"}) as (
            data, port, _):
        yield data, port


def wait_shipped(data: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        same, how = same_records(data)
        if same:
            return
        assert time.monotonic() < deadline, f"the table never matched the files: {how}"
        time.sleep(0.5)


def test_postgres_stopped_then_frozen_under_load_every_line_arrives_once(appliance):
    data, port = appliance
    load = Load(port)
    load.start()
    try:
        wait_for(lambda: len(load.done) >= 6, timeout=60, what="the load to compute")
        run(data, "stop", "postgres")
        stopped = time.monotonic()
        time.sleep(30)  # the outage the issue asks for: its length is the point
        run(data, "start", "postgres")
        restarted = time.monotonic()
        wait_for(lambda: load.computed_between(restarted, time.monotonic()) >= 3, timeout=60,
                 what="computations after the restart")
        database = running_pid(data, "postgres")
        signal_family(database, signal.SIGSTOP)  # the server and every backend
        frozen = time.monotonic()
        try:
            time.sleep(30)
        finally:
            signal_family(database, signal.SIGCONT)
        thawed = time.monotonic()
        wait_for(lambda: load.computed_between(thawed, time.monotonic()) >= 3, timeout=60,
                 what="computations after the thaw")
    finally:
        load.finish()
    # Sessions computed throughout both outages.
    assert load.computed_between(stopped + 5, restarted - 5) >= 5, load.failures[-5:]
    assert load.computed_between(frozen + 5, thawed - 5) >= 5, load.failures[-5:]
    wait_shipped(data)
    table = records_in_table(data)
    programs = {program for program, _, _ in table}
    assert {"web0", "worker0", "registry", "postgres", "shipper", "supervisord"} <= programs
    said = [m for p, _, m in table if p == "shipper"]
    assert any(m.startswith("log database not reachable") for m in said)
    assert any(m.startswith("log database reachable again") for m in said)
    # Lines written during the outages kept the time they were written.
    during = db.query(data, "SELECT count(*) FROM log WHERE program = 'web0' "
                      "AND at > now() - make_interval(secs => %s) "
                      "AND at < now() - make_interval(secs => %s)",
                      (time.monotonic() - stopped, time.monotonic() - restarted))
    assert during[0][0] > 0


def test_kill_9_of_the_shipper_loses_and_repeats_nothing(appliance):
    data, _ = appliance
    writer = logline.LineFormatter("flood")
    stop = threading.Event()

    def flood() -> None:
        # A program of our own that logs fast: 10^5 lines while the shipper dies.
        with open(data / "logs" / "flood.log", "a") as out:
            for i in range(100_000):
                record = logging.LogRecord("salvus", logging.INFO, __file__, 0, f"line {i}",
                                           None, None)
                out.write(writer.format(record) + "\n")
                if i % 500 == 0:
                    out.flush()
                    stop.wait(0.02)  # over seconds, so that the kills fall amid it

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    kills = 0
    try:
        for _ in range(5):
            pid = wait_for(lambda: running_pid(data, "shipper"), timeout=30,
                           what="the shipper to run")
            time.sleep(random.uniform(0.3, 1.2))  # somewhere in a batch
            os.kill(pid, signal.SIGKILL)
            kills += 1
            wait_for(lambda p=pid: not alive(p), timeout=10, what="the shipper to die")
    finally:
        thread.join(timeout=120)
    assert kills == 5 and not thread.is_alive()
    wait_for(lambda: running_pid(data, "shipper"), timeout=30, what="the shipper to run")
    wait_shipped(data)
    assert db.query(data, "SELECT count(*) FROM log WHERE program = 'flood'")[0][0] == 100_000


def test_logs_may_live_in_a_database_of_their_own_that_may_be_away(make_folder):
    """[logs] dsn: another database. Away when the appliance starts: it
    starts anyway, and the lines wait in their files until it is there."""
    data = make_folder("salvus-logdb-") / "data"
    run(data, "init", "--base-port", str(free_base_port()))
    try:
        edit_config(data, {("logs", "dsn"): "host=127.0.0.1 port=1 dbname=none user=none"})
        started = run(data, "start").stdout
        assert "note: the log database is not reachable" in started
        assert "Salvus is running" in started
        wait_for(lambda: "log database not reachable" in (data / "logs" / "shipper.log")
                 .read_text(), what="the shipper to say the database is away")
        own = (data / "secrets" / "dsn").read_text().strip().replace("dbname=salvus",
                                                                       "dbname=logs")
        conn = db.connect(data)
        try:
            with conn.cursor() as cur:
                cur.execute("CREATE DATABASE logs")
        finally:
            conn.close()
        edit_config(data, {("logs", "dsn"): own})
        assert "applying migration 001_log.sql" in run(data, "start").stdout

        def rows_there() -> set[str]:
            conn = psycopg2.connect(own)
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT DISTINCT program FROM log")
                    return {program for (program,) in cur.fetchall()}
            finally:
                conn.close()

        # web0 said "serving" while the database was away: that line arrives too.
        wait_for(lambda: {"web0", "worker0", "shipper"} <= rows_there(), timeout=60,
                 what="the lines in the log database")
        assert db.query(data, "SELECT count(*) FROM log") == [(0,)]  # not in the main one
        password = own.split("password=")[1].split()[0]
        for log in (data / "logs").glob("*.log"):
            assert password not in log.read_text(errors="replace"), log.name
    finally:
        run(data, "stop", check=False)


def test_logs_follow_shows_a_new_line_within_a_second_of_its_writing(appliance):
    data, port = appliance
    follow = subprocess.Popen([*SALVUSCTL, "--data", str(data), "logs", "-f", "-n", "1", "web0"],
                              stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    browser = None
    try:
        def next_line(timeout: float) -> str:
            readable, _, _ = select.select([follow.stdout], [], [], timeout)
            assert readable, f"logs -f printed nothing within {timeout}s"
            return follow.stdout.readline()

        assert "web0[" in next_line(30)  # the last row so far: it follows from here
        browser = Browserish(Frontend(port), "browser=follower")
        browser.open()
        wait_for(lambda: "browser=follower" in (data / "logs" / "web0.log").read_text(),
                 timeout=30, what="web0 to write the line")
        written = next(logline.parse(line) for line in
                       (data / "logs" / "web0.log").read_text().splitlines()
                       if "browser=follower" in line)
        at = logrecords.parse_time(written["time"]).timestamp()
        shown = next_line(max(at + 1.0 - time.time(), 0.01))
        assert "browser=follower" in shown and "opened the session" in shown
    finally:
        if browser is not None:
            browser.close()
        follow.send_signal(signal.SIGINT)
        try:
            assert follow.wait(timeout=10) == 0  # Ctrl-C ends it quietly
        finally:
            follow.kill()
            follow.wait()
            follow.stdout.close()
