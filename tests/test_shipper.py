"""The log shipper (salvusctl/shipper.py) on real files and a real PostgreSQL.

Files are written and rotated by supervisor's own rotating handler, as
supervisord does with every program's output; the shipper runs in the test's
process, one step at a time.
"""

from __future__ import annotations

import io
import logging
import os
import socket
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2
import pytest
from supervisor import loggers

from salvusctl import logline, logrecords, shipper
from salvusctl.watch import FolderWatch
from tests.db import query_dsn as query

INSTANCE, HOST = "inst1", "hostA"


@pytest.fixture
def folder(make_folder) -> Path:
    logs = make_folder("salvus-shipper-") / "logs"
    logs.mkdir()
    return logs


def messages(dsn: str, program: str) -> list[str]:
    return [m for (m,) in query(dsn, "SELECT message FROM log WHERE program = %s ORDER BY id",
                                (program,))]


def make_shipper(folder: Path, dsn: str, **options) -> shipper.Shipper:
    dsn_file = folder.parent / "log_dsn"
    dsn_file.write_text(dsn + "\n")
    return shipper.Shipper(folder, shipper.Database(dsn_file, options.pop("timeout", 5.0)),
                           INSTANCE, HOST, options.pop("keep_days", 30), **options)


def ship_all(ship: shipper.Shipper, deadline: float = 30.0) -> None:
    """Steps until one finds nothing to do (each step ships one batch)."""
    end = time.monotonic() + deadline
    while ship.step():
        assert time.monotonic() < end, "the shipper never ran out of lines"


class Program:
    """A program's output file, written and rotated as supervisord does."""

    def __init__(self, folder: Path, name: str, max_bytes: int = 0, backups: int = 0):
        self.logger = loggers.getLogger(loggers.LevelsByName.INFO)
        loggers.handle_file(self.logger, str(folder / f"{name}.log"), "%(message)s",
                            rotating=bool(max_bytes), maxbytes=max_bytes, backups=backups)
        self.formatter = logline.LineFormatter(name)

    def write(self, text: str) -> None:
        self.logger.info(text)

    def line(self, message: str, level: int = logging.INFO, **context) -> str:
        record = logging.LogRecord("salvus", level, __file__, 0, message, None, None)
        record.__dict__.update(context)
        line = self.formatter.format(record)
        self.write(line + "\n")
        return line

    def close(self) -> None:
        self.logger.close()


@pytest.fixture
def programs(folder):
    made: list[Program] = []

    def make(name: str, **options) -> Program:
        made.append(Program(folder, name, **options))
        return made[-1]

    yield make
    for program in made:
        program.close()


@pytest.fixture
def shippers():
    made: list[shipper.Shipper] = []

    def keep(ship: shipper.Shipper) -> shipper.Shipper:
        made.append(ship)
        return ship

    yield keep
    for ship in made:
        for stream in ship.streams.values():
            stream.close()
        ship.db.close()


# ---------------------------------------------------------------- records


def test_each_format_gives_its_record_time_program_and_level():
    ours = logline.LineFormatter("web0")
    record = logging.LogRecord("salvus", logging.WARNING, __file__, 0, "a|b", None, None)
    record.session = "s1"
    line = ours.format(record)
    parsed = logrecords.read(line, "web0", "h", None)
    assert (parsed.program, parsed.level, parsed.session, parsed.message) == (
        "web0", "WARNING", "s1", "a|b")
    assert parsed.at == datetime.fromtimestamp(record.created, UTC)
    pg = logrecords.read("2026-12-02 17:40:25.123 UTC [4242] FATAL:  the end", "postgres",
                         "h", None)
    assert (pg.at, pg.pid, pg.level, pg.message) == (
        datetime(2026, 12, 2, 17, 40, 25, 123000, UTC), 4242, "CRITICAL", "FATAL: the end")
    sup = logrecords.read("2026-12-02 17:40:25,123 WARN exited: web0", "supervisord", "h", None)
    assert (sup.level, sup.message) == ("WARNING", "exited: web0")
    assert sup.at == datetime(2026, 12, 2, 17, 40, 25, 123000).astimezone(UTC)
    door = logrecords.read("<28>1 2026-12-02T17:40:25.5+00:00 - haproxy 99 - - Server "
                           "frontends/web0 is DOWN", "haproxy0", "h", None)
    assert (door.at, door.program, door.pid, door.level, door.message) == (
        datetime(2026, 12, 2, 17, 40, 25, 500000, UTC), "haproxy0", 99, "WARNING",
        "Server frontends/web0 is DOWN")
    said = logrecords.read("[WARNING]  (99) : Server frontends/web0 is UP", "haproxy0", "h",
                           door)
    assert (said.at, said.pid, said.level, said.message) == (
        door.at, 99, "WARNING", "Server frontends/web0 is UP")
    follow = logrecords.read("Traceback (most recent call last):", "postgres", "h", pg)
    assert (follow.at, follow.pid, follow.level) == (pg.at, 4242, "CRITICAL")
    assert logrecords.at_least("warning") == ("WARNING", "ERROR", "CRITICAL")
    with pytest.raises(ValueError, match="debug, info, warning, error, critical"):
        logrecords.at_least("loud")
    assert logrecords.stream_of("web0.log.3") == ("web0", 3)
    assert logrecords.stream_of("supervisord.stdout") is None


# ---------------------------------------------------------------- shipping


def test_every_line_reaches_the_table_once_with_the_time_it_was_written(
        folder, log_db, programs, shippers):
    web = programs("web0")
    written = [web.line(f"event {i}", session=f"s{i % 3}") for i in range(50)]
    web.write("Traceback (most recent call last):\n  a continuation\n")
    web.write("2026-12-02 17:40:25.123 UTC [7] LOG:  not ours, still a line\n")
    web.write("a line still being written")  # no newline yet: not shipped
    ship = shippers(make_shipper(folder, log_db))
    ship_all(ship)
    rows = query(log_db, "SELECT at, program, pid, level, session, message, instance, host "
                 "FROM log ORDER BY id")
    assert len(rows) == 53
    for line, row in zip(written, rows, strict=False):
        parsed = logline.parse(line)
        assert row[0] == logrecords.parse_time(parsed["time"])  # the record time
        assert row[1:6] == ("web0", os.getpid(), "INFO", parsed["context"]["session"],
                            parsed["message"])
        assert row[6:] == (INSTANCE, socket.gethostname())  # the line's own host
    assert rows[50][0] == rows[49][0] and rows[50][5] == "Traceback (most recent call last):"
    assert rows[52][2] == 7
    web.write(" and now it ends\n")
    ship_all(ship)
    assert messages(log_db, "web0")[-1] == "a line still being written and now it ends"
    ship_all(ship)
    assert query(log_db, "SELECT count(*) FROM log") == [(54,)]


def test_lines_across_many_rotations_arrive_once_and_in_order(
        folder, log_db, programs, shippers):
    app = programs("app", max_bytes=3000, backups=5)
    ship = shippers(make_shipper(folder, log_db))
    expected = []
    for round_ in range(6):
        expected += [app.line(f"round {round_} line {i}") for i in range(60)]
        ship_all(ship)
    assert len(list(folder.glob("app.log.*"))) == 5
    assert messages(log_db, "app") == [logline.parse(line)["message"] for line in expected]
    held = ship.streams["app"].files
    assert len(held) == 1, "files shipped to their end are let go"


def test_a_line_cut_by_a_rotation_arrives_whole(folder, log_db, shippers):
    path = folder / "app.log"
    path.write_bytes(b"first\nsecond half")
    ship = shippers(make_shipper(folder, log_db))
    ship_all(ship)
    path.rename(folder / "app.log.1")  # supervisord rotates between two reads of a pipe
    path.write_bytes(b" continued\nthird\n")
    ship_all(ship)
    assert messages(log_db, "app") == ["first", "second half continued", "third"]


def test_a_new_shipper_goes_on_from_the_position_in_the_table(
        folder, log_db, programs, shippers):
    app = programs("app", max_bytes=2000, backups=3)
    first = shippers(make_shipper(folder, log_db))
    lines = [app.line(f"before {i}") for i in range(40)]
    ship_all(first)
    lines += [app.line(f"after {i}") for i in range(40)]  # rotates while nobody ships
    second = shippers(make_shipper(folder, log_db))  # as after a kill -9 of the first
    ship_all(second)
    assert messages(log_db, "app") == [logline.parse(line)["message"] for line in lines]


def test_files_rotated_while_the_database_is_away_lose_nothing(
        folder, log_db, programs, shippers):
    app = programs("app", max_bytes=2000, backups=10)
    ship = shippers(make_shipper(folder, log_db))
    lines = [app.line(f"early {i}") for i in range(10)]
    ship_all(ship)
    ship.db.dsn_file.write_text("host=127.0.0.1 port=1 dbname=none connect_timeout=1\n")
    ship.db.close()
    for i in range(8):  # several rotations, within the bound
        lines += [app.line(f"while away {i}.{j}") for j in range(20)]
        ship.step()
        ship.next_try = 0  # no backoff in a test
    assert ship.away_since is not None
    ship.db.dsn_file.write_text(log_db + "\n")
    ship_all(ship)
    assert messages(log_db, "app") == [logline.parse(line)["message"] for line in lines]


def test_beyond_the_spool_lines_are_dropped_counted_and_the_count_is_shipped(
        folder, log_db, programs, shippers):
    said = io.StringIO()
    own = Program(folder, "shipper")  # the shipper's own log, shipped like the others
    try:
        logline.setup("shipper", stream=said)
        app = programs("app", max_bytes=2000, backups=1)
        ship = shippers(make_shipper(folder, log_db))
        ship_all(ship)
        ship.db.dsn_file.write_text("host=127.0.0.1 port=1 dbname=none connect_timeout=1\n")
        ship.db.close()
        lines = []
        for i in range(12):  # far beyond two files of 2000 bytes
            lines += [app.line(f"flood {i}.{j}") for j in range(20)]
            ship.step()
            ship.next_try = 0
        own.write(said.getvalue())
        ship.db.dsn_file.write_text(log_db + "\n")
        ship_all(ship)
    finally:
        own.close()
        root = logging.getLogger()
        for handler in [h for h in root.handlers if isinstance(h.formatter,
                                                               logline.LineFormatter)]:
            root.removeHandler(handler)
    shipped = messages(log_db, "app")
    reports = [m for m in messages(log_db, "shipper") if m.startswith("dropped ")]
    assert reports, said.getvalue()
    dropped = sum(int(m.split()[1]) for m in reports)
    assert dropped > 0 and dropped + len(shipped) == len(lines)
    # What arrived is the newest lines, in order, each once.
    assert shipped == [logline.parse(line)["message"] for line in lines[dropped:]]


def test_a_database_that_never_answers_costs_a_timeout_not_a_hang(
        folder, log_db, programs, shippers):
    frozen = socket.socket()  # accepts connections (the kernel does) and says nothing
    frozen.bind(("127.0.0.1", 0))
    frozen.listen(8)
    try:
        programs("app").line("waiting")
        ship = shippers(make_shipper(folder, log_db, timeout=0.5))
        ship.db.dsn_file.write_text(f"host=127.0.0.1 port={frozen.getsockname()[1]} "
                                    "dbname=x user=x\n")
        started = time.monotonic()
        assert ship.step() is False
        assert time.monotonic() - started < 5  # a call's deadline, not forever
        assert ship.away_since is not None and ship.db.conn is None
    finally:
        frozen.close()
    ship.db.dsn_file.write_text(log_db + "\n")
    ship.next_try = 0
    ship_all(ship)
    assert messages(log_db, "app") == ["waiting"]


def test_rows_older_than_keep_days_go_in_batches(folder, log_db, shippers):
    old = datetime.now(UTC) - timedelta(days=40)
    conn = psycopg2.connect(log_db)
    try:
        with conn, conn.cursor() as cur:
            for host in (HOST, "otherhost"):
                cur.execute(
                    "INSERT INTO log (at, instance, host, program, level, message) "
                    "SELECT %s, %s, %s, 'app', 'INFO', 'old ' || n "
                    "FROM generate_series(1, 1000) AS n", (old, INSTANCE, host))
            cur.execute("INSERT INTO log (at, instance, host, program, level, message) "
                        "VALUES (now(), %s, %s, 'app', 'INFO', 'young')", (INSTANCE, HOST))
    finally:
        conn.close()
    ship = shippers(make_shipper(folder, log_db, keep_days=30, retire_batch=100))
    steps = 0
    while ship.step():
        steps += 1
        assert steps < 100
    assert steps == 10  # 1000 rows, 100 at a time (the eleventh finds none)
    left = Counter(query(log_db, "SELECT host, message = 'young' FROM log"))
    assert left == Counter({("otherhost", False): 1000, (HOST, True): 1})


class LosesOneReply(shipper.Database):
    """The real database, but the answer to one batch is lost after the
    server committed it (the connection broke at the worst moment)."""

    armed = False

    def run(self, sql: str, params=None) -> list[tuple]:
        rows = super().run(sql, params)
        if self.armed and sql is shipper.INSERT:
            self.armed = False
            self.close()
            raise shipper.DatabaseAway("connection lost before the reply")
        return rows


def test_a_batch_whose_reply_was_lost_is_neither_repeated_nor_counted_dropped(
        folder, log_db, programs, shippers):
    said = io.StringIO()
    logline.setup("shipper", stream=said)
    try:
        app = programs("app", max_bytes=1500, backups=1)
        dsn_file = folder.parent / "log_dsn"
        dsn_file.write_text(log_db + "\n")
        ship = shippers(shipper.Shipper(folder, LosesOneReply(dsn_file, 5.0), INSTANCE, HOST,
                                        30))
        lines = [app.line(f"first {i}") for i in range(10)]
        ship_all(ship)
        lines += [app.line(f"second {i}") for i in range(10)]
        ship.db.armed = True
        assert ship.step() is False  # committed, but the shipper cannot know
        assert ship.uncertain is not None
        # Before it learns, the file those lines are in is rotated away.
        lines += [app.line(f"third {i}") for i in range(60)]
        ship.look()
        ship.next_try = 0
        ship_all(ship)
    finally:
        root = logging.getLogger()
        for handler in [h for h in root.handlers if isinstance(h.formatter,
                                                               logline.LineFormatter)]:
            root.removeHandler(handler)
    shipped = messages(log_db, "app")
    reported = [line for line in said.getvalue().splitlines() if "| dropped " in line]
    dropped = sum(int(line.split("| dropped ")[1].split()[0]) for line in reported)
    assert len(shipped) == len(set(shipped)), "a line arrived twice"
    assert shipped[:20] == [logline.parse(line)["message"] for line in lines[:20]]
    assert dropped + len(shipped) == len(lines), (dropped, len(shipped), said.getvalue())


def test_a_write_in_the_folder_wakes_the_watch(folder):
    watch = FolderWatch(folder)
    assert watch.open(), "inotify is there on Linux"
    try:
        (folder / "app.log").write_text("")
        watch.wait(0)  # the creation, already
        woke = threading.Event()

        def waiter() -> None:
            watch.wait(30)
            woke.set()

        thread = threading.Thread(target=waiter)
        thread.start()
        with (folder / "app.log").open("a") as out:
            out.write("a line\n")
        assert woke.wait(10), "a write did not wake the watch"
        thread.join(timeout=10)
    finally:
        watch.close()
