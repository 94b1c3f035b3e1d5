"""``salvusctl logs``: the log table read back (filters, order, output,
following), and the files of DATA/logs when the log database is away."""

from __future__ import annotations

import contextlib
import logging
import os
import pty
import queue
import select
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2
import pytest
from click.testing import CliRunner

from salvusctl import config as configfile
from salvusctl import logline, logrecords, logview
from salvusctl.cli import cli
from salvusctl.logrecords import LEVELS, Record
from salvusctl.logview import Files, Filters, Table

INSTANCE = "inst1"
T = datetime(2026, 12, 2, 17, 40, 25, 123456, tzinfo=UTC)
DEADLINE = 30  # seconds to wait for what must come; never a measure of speed
UNREACHABLE = "host=/nonexistent-salvus-test dbname=salvus connect_timeout=1"
EVERY = Filters()


# ---------------------------------------------------------------- helpers


@pytest.fixture
def local_zone(monkeypatch):
    """Local time is UTC+3 (POSIX: "UTC-3"), whatever the machine's zone."""
    monkeypatch.setenv("TZ", "UTC-3")
    time.tzset()
    yield timedelta(hours=3)
    monkeypatch.undo()
    time.tzset()


def insert(dsn: str, *rows: dict, notify: bool = False) -> None:
    """Rows in one transaction, with the shipper's NOTIFY when asked."""
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            for row in rows:
                cur.execute(
                    "INSERT INTO log (at, instance, host, program, pid, level, session, browser,"
                    " message) VALUES (%(at)s, %(instance)s, %(host)s, %(program)s, %(pid)s,"
                    " %(level)s, %(session)s, %(browser)s, %(message)s)",
                    {"at": T, "instance": INSTANCE, "host": "host1", "program": "web0",
                     "pid": 4242, "level": "INFO", "session": None, "browser": None,
                     "message": "m", **row})
            if notify:
                cur.execute(f"NOTIFY {logview.CHANNEL}")
    finally:
        conn.close()


def messages(records) -> list[str]:
    return [record.message for record in records]


def read(dsn: str, filters: Filters = EVERY, lines: int | None = None,
         instance: str = INSTANCE) -> list[Record]:
    table = Table(dsn, instance)
    try:
        return list(table.records(filters, lines))
    finally:
        table.close()


def data_folder(path: Path, log_dsn: str) -> Path:
    """A data folder as far as `salvusctl logs` needs it: its config."""
    raw = configfile.defaults({("salvus", "instance"): INSTANCE, ("logs", "dsn"): log_dsn})
    path.mkdir(exist_ok=True)
    configfile.write(path / "salvus.conf", raw)
    (path / "logs").mkdir(exist_ok=True)
    return path


def salvusctl(data: Path, *args: str, color: bool = False):
    return CliRunner().invoke(cli, ["--data", str(data), "logs", *args], color=color)


def one_error_line(result, code: int, *words: str) -> None:
    assert result.exit_code == code, (result.output, result.exception)
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.output
    for word in words:
        assert word in errors[0], errors[0]


@contextlib.contextmanager
def following(source: Table | Files, filters: Filters = EVERY, lines: int = 10):
    """source.follow in a thread; its records and notes in queues; stopped
    and joined at the end."""
    records: queue.Queue[Record] = queue.Queue()
    notes: queue.Queue[str] = queue.Queue()
    stop = threading.Event()
    thread = threading.Thread(target=source.follow,
                              args=(filters, lines, records.put, notes.put, stop))
    thread.start()
    try:
        yield records, notes
    finally:
        stop.set()
        thread.join(DEADLINE)
        source.close()
    assert not thread.is_alive(), "following did not stop"


def next_messages(records: queue.Queue, count: int) -> list[str]:
    return [records.get(timeout=DEADLINE).message for _ in range(count)]


# ---------------------------------------------------------------- --since


@pytest.mark.parametrize(("text", "ago"), [
    ("-10m", timedelta(minutes=10)), ("10m", timedelta(minutes=10)),
    ("2h", timedelta(hours=2)), ("3d", timedelta(days=3)), ("30s", timedelta(seconds=30)),
    ("10 min ago", timedelta(minutes=10)), ("2 hours ago", timedelta(hours=2)),
    ("1w", timedelta(weeks=1)), ("now", timedelta(0)),
])
def test_since_reads_ages(text, ago):
    assert logview.parse_since(text, now=T) == T - ago


def test_since_reads_days_and_iso_times_in_local_time(local_zone):
    now = datetime(2026, 12, 2, 22, 30, tzinfo=UTC)  # already Dec 03 01:30 locally
    assert logview.parse_since("today", now) == datetime(2026, 12, 2, 21, 0, tzinfo=UTC)
    assert logview.parse_since("yesterday", now) == datetime(2026, 12, 1, 21, 0, tzinfo=UTC)
    local = {"2026-12-02T17:40": datetime(2026, 12, 2, 14, 40, tzinfo=UTC),
             "2026-12-02 17:40:25": datetime(2026, 12, 2, 14, 40, 25, tzinfo=UTC),
             "2026-12-02": datetime(2026, 12, 1, 21, 0, tzinfo=UTC),
             "2026-12-02T17:40:25Z": datetime(2026, 12, 2, 17, 40, 25, tzinfo=UTC),
             "2026-12-02 17:40:25+01:00": datetime(2026, 12, 2, 16, 40, 25, tzinfo=UTC)}
    for text, expected in local.items():
        assert logview.parse_since(text, now) == expected, text


@pytest.mark.parametrize("text", ["soon", "10 parsecs", "", "2026-13-02", "ten minutes ago"])
def test_a_bad_since_names_the_forms(text):
    with pytest.raises(ValueError, match=r"use an ISO time .*today, yesterday.*10m"):
        logview.parse_since(text, now=T)


# ---------------------------------------------------------------- the table


def test_names_and_kinds_choose_programs(log_db):
    insert(log_db, *({"program": p, "message": p} for p in
                     ("web0", "web1", "web10", "webhook", "worker0", "registry")))
    assert messages(read(log_db, Filters(("web",)))) == ["web0", "web1", "web10"]
    assert messages(read(log_db, Filters(("web1",)))) == ["web1"]
    assert messages(read(log_db, Filters(("worker", "registry")))) == ["worker0", "registry"]
    assert len(read(log_db)) == 6


def test_only_this_instance(log_db):
    insert(log_db, {"message": "ours"}, {"instance": "other", "message": "theirs"})
    assert messages(read(log_db)) == ["ours"]
    assert messages(read(log_db, instance="other")) == ["theirs"]


def test_rows_come_by_time_then_by_id(log_db):
    insert(log_db, {"at": T + timedelta(seconds=2), "message": "c"},
           {"at": T, "message": "a"}, {"at": T + timedelta(seconds=2), "message": "d"},
           {"at": T + timedelta(seconds=1), "message": "b"})
    records = read(log_db)
    assert messages(records) == ["a", "b", "c", "d"]
    assert records[0].at == T and records[0].at.tzinfo == UTC


def test_pages_go_through_every_row_once(log_db, monkeypatch):
    monkeypatch.setattr(logview, "PAGE", 3)
    # Equal times across page ends: the (at, id) key neither skips nor repeats.
    insert(log_db, *({"at": T + timedelta(seconds=i // 4), "message": str(i)}
                     for i in range(11)))
    assert messages(read(log_db)) == [str(i) for i in range(11)]


def test_since_level_and_session_filter(log_db):
    now = datetime.now(UTC)
    insert(log_db,
           {"at": now - timedelta(hours=3), "level": "ERROR", "message": "old error"},
           {"at": now - timedelta(hours=1), "level": "WARNING", "session": "s1",
            "message": "warning"},
           {"at": now - timedelta(minutes=5), "level": "DEBUG", "session": "s1",
            "message": "debug"},
           {"at": now - timedelta(minutes=1), "level": "CRITICAL", "session": "s2",
            "message": "critical"})
    assert messages(read(log_db, Filters(since=logview.parse_since("2h")))) == [
        "warning", "debug", "critical"]
    assert messages(read(log_db, Filters(since=logview.parse_since("10 min ago")))) == [
        "debug", "critical"]
    assert messages(read(log_db, Filters(levels=logrecords.at_least("warning")))) == [
        "old error", "warning", "critical"]
    assert messages(read(log_db, Filters(levels=logrecords.at_least("error")))) == [
        "old error", "critical"]
    assert messages(read(log_db, Filters(session="s1"))) == ["warning", "debug"]
    assert messages(read(log_db, Filters(("web",), logview.parse_since("2h"),
                                         logrecords.at_least("info"), "s1"))) == ["warning"]


def test_lines_gives_the_last_rows_in_order(log_db):
    insert(log_db, *({"at": T + timedelta(seconds=i), "message": str(i)} for i in range(5)))
    assert messages(read(log_db, lines=2)) == ["3", "4"]
    assert messages(read(log_db, Filters(levels=("ERROR",)), lines=2)) == []
    assert read(log_db, lines=0) == []


def test_programs_are_this_instances(log_db):
    insert(log_db, {"program": "web0"}, {"program": "shipper"}, {"program": "web0"},
           {"program": "elsewhere", "instance": "other"})
    table = Table(log_db, INSTANCE)
    try:
        assert table.programs() == {"web0", "shipper"}
    finally:
        table.close()


# ---------------------------------------------------------------- output


def test_a_record_prints_like_journalctl(local_zone):
    record = Record(T, "web0", "host1", 4242, "INFO", "9f3c", "b7", "first\nsecond\n")
    head = "Dec 02 20:40:25.123456 host1 web0[4242] INFO session=9f3c browser=b7: "
    assert logview.format_record(record) == head + "first\n" + " " * len(head) + "second"
    bare = Record(T, "postgres", "host1", None, "WARNING", None, None, "LOG: x")
    assert click_unstyled(logview.format_record(bare)) == \
        "Dec 02 20:40:25.123456 host1 postgres WARNING: LOG: x"


def click_unstyled(text: str) -> str:
    import click

    return click.unstyle(text)


def test_levels_are_coloured_and_control_characters_escaped():
    def styled(level: str, message: str = "m") -> str:
        return logview.format_record(Record(T, "web0", "h", 1, level, None, None, message))

    assert styled("ERROR").startswith("\x1b[31m\x1b[1m")
    assert styled("CRITICAL").startswith("\x1b[31m\x1b[1m")
    assert styled("WARNING").startswith("\x1b[33m")
    assert styled("DEBUG").startswith("\x1b[2m")
    assert "\x1b" not in styled("INFO")
    assert styled("INFO", "a\x1b[2Jb\rc").endswith(": a\\x1b[2Jb\\x0dc")


def test_the_command_prints_rows_without_colour_off_a_terminal(log_db, tmp_path):
    data = data_folder(tmp_path / "data", log_db)
    insert(log_db, {"level": "ERROR", "message": "bad", "session": "s1"},
           {"at": T + timedelta(seconds=1), "program": "worker0", "message": "fine"})
    result = salvusctl(data, "--no-pager")
    assert result.exit_code == 0, result.output
    assert [line.split(" ", 3)[3] for line in result.stdout.splitlines()] == [
        "host1 web0[4242] ERROR session=s1: bad", "host1 worker0[4242] INFO: fine"]
    assert "\x1b" not in result.stdout and result.stderr == ""
    coloured = salvusctl(data, "--no-pager", "-n", "1", "--level", "error", color=True)
    assert coloured.stdout.startswith("\x1b[31m\x1b[1m") and coloured.stdout.count("\n") == 1
    assert salvusctl(data, "worker", "--since", "2026-12-02 17:00Z").stdout.endswith("fine\n")


def test_bad_since_level_and_names_are_one_line(log_db, tmp_path):
    data = data_folder(tmp_path / "data", log_db)
    insert(log_db, {"program": "oddity"})
    one_error_line(salvusctl(data, "--since", "soon"), 2, "--since", "'soon'", "10m", "today")
    one_error_line(salvusctl(data, "--level", "loud"), 2, "--level", "'loud'", "warning")
    one_error_line(salvusctl(data, "nosuch"), 11, "'nosuch'", "web0", "worker0", "oddity")
    assert salvusctl(data, "odd").exit_code == 11  # a name is not a prefix
    (data / "logs" / "supervisord.log").write_text("")
    for name in ("oddity", "supervisord", "shipper", "worker", "web0"):
        assert salvusctl(data, name).exit_code == 0, name


def test_on_a_terminal_the_rows_go_through_the_pager_in_colour(log_db, tmp_path):
    data = data_folder(tmp_path / "data", log_db)
    insert(log_db, {"level": "WARNING", "message": "careful"})
    paged = on_a_terminal(data, {"PAGER": "sed s/^/paged:/"})
    assert "paged:" in paged and "careful" in paged
    straight = on_a_terminal(data, {"PAGER": "sed s/^/paged:/"}, "--no-pager")
    assert "paged:" not in straight and "\x1b[33m" in straight and "careful" in straight


def on_a_terminal(data: Path, env: dict, *args: str) -> str:
    """What `salvusctl logs` shows on a pseudo-terminal."""
    main, sub = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "salvusctl", "--data", str(data), "logs",
                             *args], stdin=sub, stdout=sub, stderr=subprocess.PIPE,
                            env={**os.environ, **env})
    os.close(sub)
    shown = b""
    try:
        while select.select([main], [], [], DEADLINE)[0]:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: every writer of the terminal is gone
                break
            if not chunk:
                break
            shown += chunk
        assert proc.wait(DEADLINE) == 0, proc.stderr.read()
    finally:
        os.close(main)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    return shown.decode()


# ---------------------------------------------------------------- following the table


def test_follow_prints_the_last_rows_then_each_new_one(log_db):
    insert(log_db, *({"at": T + timedelta(seconds=i), "message": f"old{i}"} for i in range(12)))
    with following(Table(log_db, INSTANCE), Filters(("web",))) as (records, notes):
        assert next_messages(records, 10) == [f"old{i}" for i in range(2, 12)]
        insert(log_db, {"message": "new", "at": T - timedelta(days=1)}, notify=True)
        assert next_messages(records, 1) == ["new"]  # arrival order, whatever its time
        insert(log_db, {"program": "worker0", "message": "not web"},
               {"message": "after"}, notify=True)
        assert next_messages(records, 1) == ["after"]
        # No notification (a lost one): the look every second finds it.
        insert(log_db, {"message": "quiet"})
        assert next_messages(records, 1) == ["quiet"]
    assert records.empty() and notes.empty()


def test_follow_finds_a_row_that_commits_after_a_later_one(log_db):
    slow = psycopg2.connect(log_db)  # another host's shipper, in mid-transaction
    try:
        with following(Table(log_db, INSTANCE), lines=0) as (records, _):
            with slow.cursor() as cur:
                cur.execute("INSERT INTO log (at, instance, host, program, level, message)"
                            " VALUES (%s, %s, 'host2', 'web1', 'INFO', 'lower id')",
                            (T, INSTANCE))
            insert(log_db, {"message": "higher id"}, notify=True)
            assert next_messages(records, 1) == ["higher id"]
            with slow.cursor() as cur:
                cur.execute(f"NOTIFY {logview.CHANNEL}")
            slow.commit()
            assert next_messages(records, 1) == ["lower id"]
    finally:
        slow.close()


def test_follow_goes_on_after_the_database_went_away(log_db):
    with following(Table(log_db, INSTANCE), lines=1) as (records, notes):
        insert(log_db, {"message": "before"}, notify=True)
        assert next_messages(records, 1) == ["before"]
        conn = psycopg2.connect(log_db)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        finally:
            conn.close()
        assert "went away" in notes.get(timeout=DEADLINE)
        assert "is back" in notes.get(timeout=DEADLINE)
        insert(log_db, {"message": "after"}, notify=True)
        assert next_messages(records, 1) == ["after"]
    assert records.empty() and notes.empty()


def test_arrivals_look_again_above_the_top_of_a_while_ago():
    arrivals = logview.Arrivals(10)
    arrivals.add([12, 14], top=14, now=100.0)
    assert (arrivals.floor, arrivals.recent) == (10, {12, 14})  # 11, 13 may still commit
    arrivals.add([], top=20, now=101.0)  # rows of other programs only
    arrivals.add([21], top=22, now=100.0 + logview.SETTLE)
    assert (arrivals.floor, arrivals.recent) == (14, {21})
    arrivals.add([], top=22, now=101.0 + logview.SETTLE)
    assert (arrivals.floor, arrivals.recent) == (20, {21})


def test_follow_from_the_command_ends_quietly_on_ctrl_c(log_db, tmp_path):
    data = data_folder(tmp_path / "data", log_db)
    insert(log_db, {"message": "old"})
    proc = subprocess.Popen([sys.executable, "-m", "salvusctl", "--data", str(data), "logs",
                             "-f"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout])
    reader.start()
    try:
        assert lines.get(timeout=DEADLINE).endswith("web0[4242] INFO: old\n")
        insert(log_db, {"message": "new", "level": "ERROR"}, notify=True)
        assert lines.get(timeout=DEADLINE).endswith("web0[4242] ERROR: new\n")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(DEADLINE) == 0
        assert proc.stderr.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(DEADLINE)
        proc.stdout.close()
        proc.stderr.close()


# ---------------------------------------------------------------- the files


def ours(program: str, at: datetime, message: str, level: int = logging.INFO,
         **context: str) -> str:
    record = logging.LogRecord("salvus", level, __file__, 1, message, None, None)
    record.created = at.timestamp()
    for key, value in context.items():
        setattr(record, key, value)
    return logline.LineFormatter(program).format(record) + "\n"


def postgres_line(at: datetime, message: str, level: str = "LOG") -> str:
    return f"{at:%Y-%m-%d %H:%M:%S}.{at.microsecond // 1000:03d} UTC [77] {level}:  {message}\n"


def supervisord_line(at: datetime, message: str) -> str:
    local = at.astimezone()
    return f"{local:%Y-%m-%d %H:%M:%S},{local.microsecond // 1000:03d} INFO {message}\n"


def at(seconds: float) -> datetime:
    return T + timedelta(seconds=seconds)


@pytest.fixture
def logs(tmp_path) -> Path:
    """A logs folder of every format, rotated web0 files among them."""
    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / "web0.log.2").write_text(ours("web0", at(-1), "w0"))
    (folder / "web0.log.1").write_text(ours("web0", at(0), "w1")
                                       + ours("web0", at(2), "w2", session="s1"))
    (folder / "web0.log").write_text(ours("web0", at(4), "w3", logging.ERROR)
                                     + "Traceback (most recent call last):\n"
                                     + ours("web0", at(6), "w4"))
    (folder / "postgres.log").write_text(postgres_line(at(1), "p1")
                                         + postgres_line(at(5), "p2", "ERROR"))
    (folder / "supervisord.log").write_text(supervisord_line(at(3), "s1"))
    (folder / "worker0.log").write_text(ours("worker0", at(2.5), "k1", logging.DEBUG))
    (folder / "notes.txt").write_text("not a log\n")
    return folder


def from_files(folder: Path, filters: Filters = EVERY, lines: int | None = None
               ) -> list[str]:
    files = Files(folder, "host1")
    try:
        return messages(files.records(filters, lines))
    finally:
        files.close()


def test_files_are_merged_by_time_oldest_file_first(logs):
    assert from_files(logs) == ["w0", "w1", "LOG: p1", "w2", "k1", "s1", "w3",
                                "Traceback (most recent call last):", "ERROR: p2", "w4"]


def test_files_take_the_same_filters(logs):
    assert from_files(logs, Filters(("web",))) == [
        "w0", "w1", "w2", "w3", "Traceback (most recent call last):", "w4"]
    assert from_files(logs, Filters(("postgres", "supervisord"))) == [
        "LOG: p1", "s1", "ERROR: p2"]
    assert from_files(logs, Filters(levels=logrecords.at_least("warning"))) == [
        "w3", "Traceback (most recent call last):", "ERROR: p2"]
    assert from_files(logs, Filters(levels=("DEBUG",))) == ["k1"]
    assert from_files(logs, Filters(session="s1")) == ["w2"]
    assert from_files(logs, Filters(since=at(2.9))) == [  # supervisord: ms
        "s1", "w3", "Traceback (most recent call last):", "ERROR: p2", "w4"]
    assert from_files(logs, lines=2) == ["ERROR: p2", "w4"]
    assert Files(logs, "h").programs() == {"web0", "postgres", "supervisord", "worker0"}


def test_the_command_reads_the_files_when_the_database_is_away(logs, tmp_path):
    data = data_folder(tmp_path, UNREACHABLE)
    result = salvusctl(data, "--no-pager", "web0", "postgres", "-n", "3")
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("note: the log database is not reachable (")
    assert result.stderr.rstrip().endswith(f"reading the files in {logs}")
    shown = result.stdout.splitlines()
    assert [line.split(": ", 1)[1] for line in shown] == [
        "Traceback (most recent call last):", "ERROR: p2", "w4"]
    assert f" {configfile.defaults({})[('salvus', 'host')]} postgres[77] ERROR: " in shown[1]
    one_error_line(salvusctl(data, "nosuch"), 11, "supervisord", "web0", "shipper")


def test_following_files_sees_appended_and_rotated_lines(logs):
    web = logs / "web0.log"
    with following(Files(logs, "host1"), Filters(("web", "worker")), lines=2) as (records, _):
        assert next_messages(records, 2) == ["Traceback (most recent call last):", "w4"]
        with web.open("a") as handle:
            handle.write(ours("web0", at(7), "w5"))
        assert next_messages(records, 1) == ["w5"]
        with web.open("a") as handle:  # half a line now, the rest later: one record
            line = ours("web0", at(8), "w6 in two writes")
            handle.write(line[:30])
            handle.flush()
            handle.write(line[30:])
        assert next_messages(records, 1) == ["w6 in two writes"]
        with web.open("a") as handle:
            handle.write(ours("web0", at(9), "last of the old file"))
        web.rename(logs / "web0.log.1")
        web.write_text(ours("web0", at(10), "first of the new file"))
        assert next_messages(records, 2) == ["last of the old file", "first of the new file"]
        (logs / "worker1.log").write_text(ours("worker1", at(11), "a new program"))
        (logs / "postgres.log").write_text(postgres_line(at(11), "not asked for"))
        assert next_messages(records, 1) == ["a new program"]
        with web.open("a") as handle:
            handle.write(ours("web0", at(12), "still following"))
        assert next_messages(records, 1) == ["still following"]
    assert records.empty()


def test_levels_cover_every_word():
    # The filters compare the words of the table's CHECK: the same five.
    assert set(logrecords.LEVEL_WORDS.values()) == set(LEVELS)
