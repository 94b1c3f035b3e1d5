"""``salvusctl logs``: the programs' log lines read back, like journalctl.

The shipper copies every line of DATA/logs/ into the ``log`` table
(sql/logs/); this reads them from there, oldest first (``ORDER BY at, id``),
restricted to this data folder's instance and filtered by program names (a
kind such as ``web`` names web0, web1, ...), ``--since``, ``--level`` (that
level or a more severe one) and ``--session``. Rows come in pages on
``(at, id)``: millions of them stream through the pager, never all held in
memory, and no transaction stays open while a pager waits.

``--follow`` prints the last rows, then each new row as it arrives: the
shipper runs ``NOTIFY salvus_log`` (``CHANNEL``) in each insert transaction,
a ``LISTEN`` connection wakes the reader at once, and a look every second
covers a notification that was lost. A database that goes away while
following is said once on stderr and retried; following goes on where it
stopped.

When the log database cannot be reached the files under DATA/logs (also the
shipper's spool) are read instead, with the same filters: each stream's
files oldest first, the streams merged by time; following them polls the
current files for appended lines and re-opens a file that was rotated.

Each record prints as journalctl's short-precise form, in local time::

    Dec 02 17:40:25.123456 host1 web0[4242] INFO session=9f3c: the message
"""

from __future__ import annotations

import heapq
import os
import re
import select
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import click
import psycopg2
import psycopg2.errors
import psycopg2.extensions

from salvusctl import logrecords
from salvusctl.errors import DatabaseError, SalvusError, UnknownProgram
from salvusctl.logrecords import LEVELS, Record
from salvusctl.shipper import CHANNEL  # NOTIFY'd with each batch

if TYPE_CHECKING:
    from salvusctl.appliance import Appliance

PAGE = 2000  # rows per query when reading the table through
FOLLOW_LINES = 10  # rows printed before following, unless --lines says
POLL = 1.0  # seconds between looks at the table when no notification comes
FILE_POLL = 0.25  # seconds between looks at the files
RETRY = 1.0  # seconds between tries of a database that went away
CONNECT_TIMEOUT = 3
# Row ids are taken when a row is inserted, not when it commits: a row of
# another host's slower transaction can commit after a higher id was shown.
# Ids above the highest of SETTLE seconds ago are looked at again (Arrivals).
SETTLE = 5.0
COLUMNS = "id, at, host, program, pid, level, session, browser, message"
SINCE_FORMS = ("an ISO time (2026-12-02T17:40 or '2026-12-02 17:40:25'; local time unless "
               "it has a zone), today, yesterday, now, or an age such as 30s, 10m, -10m, 2h, "
               "3d or '10 min ago'")
UNITS = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600),
    **dict.fromkeys(("d", "day", "days"), 86400),
    **dict.fromkeys(("w", "week", "weeks"), 7 * 86400),
}
AGE = re.compile(r"^-?\s*(\d+)\s*([a-z]+)(\s+ago)?$")
STYLES = {"CRITICAL": {"fg": "red", "bold": True}, "ERROR": {"fg": "red", "bold": True},
          "WARNING": {"fg": "yellow"}, "DEBUG": {"dim": True}}
# A message may hold what a user's code printed: no control character of it
# reaches the terminal (escape sequences could rewrite the screen).
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

Emit = Callable[[Record], None]
Note = Callable[[str], None]


# ---------------------------------------------------------------- options


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """What an admin types after --since, as an aware UTC time; ValueError
    names the accepted forms."""
    now = now or datetime.now(UTC)
    word = text.strip().lower()
    if word == "now":
        return now
    if word in ("today", "yesterday"):
        day = now.astimezone().date() - timedelta(days=word == "yesterday")
        # A naive local midnight: astimezone finds that day's own offset (DST).
        return datetime(day.year, day.month, day.day).astimezone(UTC)
    age = AGE.match(word)
    if age and age[2] in UNITS:
        return now - timedelta(seconds=int(age[1]) * UNITS[age[2]])
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"cannot read {text!r} as a time; use {SINCE_FORMS}") from None
    return at.astimezone(UTC)  # a naive time is local time


def since_option(ctx: click.Context, param: click.Parameter,
                 value: str | None) -> datetime | None:
    """click callback of --since."""
    if value is None:
        return None
    try:
        return parse_since(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def level_option(ctx: click.Context, param: click.Parameter,
                 value: str | None) -> tuple[str, ...]:
    """click callback of --level: the levels shown."""
    if value is None:
        return LEVELS
    try:
        return logrecords.at_least(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


# ---------------------------------------------------------------- filters


def kind_of(program: str) -> str:
    """``web10`` -> ``web`` (as salvusctl.programs.kind_of, ASCII digits)."""
    return re.sub("[0-9]+$", "", program)


def named(name: str, program: str) -> bool:
    """A name names itself, and a kind (``web``) every program of it (web0,
    web1, ...): ``web1`` is not the kind of ``web10``."""
    return program == name or kind_of(program) == name


@dataclass(frozen=True)
class Filters:
    names: tuple[str, ...] = ()
    since: datetime | None = None
    levels: tuple[str, ...] = LEVELS
    session: str | None = None

    def admits(self, record: Record) -> bool:
        return ((not self.names or any(named(n, record.program) for n in self.names))
                and (self.since is None or record.at >= self.since)
                and record.level in self.levels
                and (self.session is None or record.session == self.session))

    def where(self, instance: str) -> tuple[str, list]:
        """The filters as a WHERE condition and its parameters."""
        clauses, params = ["instance = %s"], [instance]
        if self.names:
            clauses.append("(program = ANY(%s) OR regexp_replace(program, '[0-9]+$', '')"
                           " = ANY(%s))")
            params += [list(self.names), list(self.names)]
        if self.since is not None:
            clauses.append("at >= %s")
            params.append(self.since)
        if set(self.levels) != set(LEVELS):
            clauses.append("level = ANY(%s)")
            params.append(list(self.levels))
        if self.session is not None:
            clauses.append("session = %s")
            params.append(self.session)
        return " AND ".join(clauses), params


def check_names(names: Iterable[str], sources: Iterable[Callable[[], set[str]]]) -> None:
    """Every name is a program with logs, or a kind of one. The sources of
    program names are asked in turn, only while a name is still unknown (the
    last may query the table)."""
    missing, known = list(names), set()
    for programs in sources:
        if not missing:
            return
        known |= programs()
        missing = [name for name in missing if not any(named(name, p) for p in known)]
    if missing:
        raise UnknownProgram(f"no program named {missing[0]!r}; the programs with logs are: "
                             + ", ".join(sorted(known)))


# ---------------------------------------------------------------- output


def format_record(record: Record) -> str:
    """One record as a line (continuation lines of its message indented
    under its first), styled by level; click.echo drops the style off a
    terminal."""
    stamp = record.at.astimezone().strftime("%b %d %H:%M:%S.%f")
    pid = "" if record.pid is None else f"[{record.pid}]"
    context = "".join(f" {key}={value}" for key, value in
                      (("session", record.session), ("browser", record.browser)) if value)
    head = f"{stamp} {record.host} {record.program}{pid} {record.level}{context}: "
    first, *rest = record.message.rstrip("\n").split("\n")
    lines = [CONTROL.sub(_escape, line) for line in
             (head + first, *(" " * len(head) + line for line in rest))]
    style = STYLES.get(record.level)
    return "\n".join(click.style(line, **style) if style else line for line in lines)


def _escape(match: re.Match) -> str:
    return f"\\x{ord(match[0]):02x}"


def output(records: Iterable[Record], pager: bool) -> None:
    """Print records; through a pager when asked and on a terminal."""
    if pager and sys.stdout.isatty():
        # A generator: the pager shows the first page before the rest is
        # read. Each line ends where the next begins: the pager adds the last
        # newline itself.
        click.echo_via_pager(("\n" if i else "") + format_record(record)
                             for i, record in enumerate(records))
        return
    for record in records:
        click.echo(format_record(record))


def last(records: Iterable[Record], lines: int | None) -> Iterable[Record]:
    return records if lines is None else deque(records, maxlen=lines)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _pause(stop: threading.Event | None, seconds: float) -> bool:
    """Wait; True once following should end."""
    if stop is None:
        time.sleep(seconds)
        return False
    return stop.wait(seconds)


# ---------------------------------------------------------------- the table


def connect(dsn: str) -> psycopg2.extensions.connection:
    """An autocommit connection (no transaction stays open between pages);
    DatabaseError with libpq's first line when there is none."""
    try:
        conn = psycopg2.connect(dsn, connect_timeout=CONNECT_TIMEOUT)
    except psycopg2.OperationalError as exc:
        raise DatabaseError(_first_line(exc)) from None
    conn.autocommit = True
    return conn


def _row(row: tuple) -> tuple[int, Record]:
    row_id, at, host, program, pid, level, session, browser, message = row
    return row_id, Record(at.astimezone(UTC), program, host, pid, level, session, browser,
                          message)


class Table:
    """The log rows of one instance."""

    def __init__(self, dsn: str, instance: str):
        self.dsn = dsn
        self.instance = instance
        self.conn = connect(dsn)

    def close(self) -> None:
        self.conn.close()

    def _query(self, sql: str, params: list) -> list[tuple]:
        with self.conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()

    def check(self) -> None:
        """Raises UndefinedTable when the log migrations were never applied."""
        self._query("SELECT 1 FROM log LIMIT 0", [])

    def programs(self) -> set[str]:
        """This instance's programs, one index probe each (a loose scan of
        log_program_at), not a scan of every row."""
        rows = self._query(
            "WITH RECURSIVE p(program) AS ("
            " (SELECT program FROM log WHERE instance = %s ORDER BY program LIMIT 1)"
            " UNION ALL SELECT (SELECT program FROM log WHERE instance = %s"
            "  AND program > p.program ORDER BY program LIMIT 1) FROM p"
            "  WHERE p.program IS NOT NULL)"
            " SELECT program FROM p WHERE program IS NOT NULL",
            [self.instance, self.instance])
        return {program for (program,) in rows}

    def pages(self, filters: Filters) -> Iterator[tuple[int, Record]]:
        """Every matching row in (at, id) order, PAGE rows a query."""
        where, params = filters.where(self.instance)
        after: list = []
        while True:
            # at >= lets the planner use log_at; (at, id) > skips rows shown.
            more = " AND at >= %s AND (at, id) > (%s, %s)" if after else ""
            rows = self._query(f"SELECT {COLUMNS} FROM log WHERE {where}{more}"
                               f" ORDER BY at, id LIMIT {PAGE}", params + after)
            yield from map(_row, rows)
            if len(rows) < PAGE:
                return
            after = [rows[-1][1], rows[-1][1], rows[-1][0]]

    def tail(self, filters: Filters, lines: int, top: int | None = None
             ) -> list[tuple[int, Record]]:
        """The last ``lines`` matching rows (of ids up to ``top``), in order."""
        where, params = filters.where(self.instance)
        if top is not None:
            where += " AND id <= %s"
            params.append(top)
        rows = self._query(f"SELECT * FROM (SELECT {COLUMNS} FROM log WHERE {where}"
                           " ORDER BY at DESC, id DESC LIMIT %s) AS t ORDER BY at, id",
                           [*params, lines])
        return [_row(row) for row in rows]

    def records(self, filters: Filters, lines: int | None) -> Iterator[Record]:
        rows = self.pages(filters) if lines is None else self.tail(filters, lines)
        return (record for _, record in rows)

    def top(self) -> int:
        return self._query("SELECT coalesce(max(id), 0) FROM log", [])[0][0]

    def newer(self, filters: Filters, arrivals: Arrivals) -> list[tuple[int, Record]]:
        """Matching rows above the floor not shown yet, in arrival order."""
        where, params = filters.where(self.instance)
        rows = self._query(f"SELECT {COLUMNS} FROM log WHERE {where} AND id > %s"
                           " AND NOT id = ANY(%s) ORDER BY id",
                           [*params, arrivals.floor, list(arrivals.recent)])
        return [_row(row) for row in rows]

    def follow(self, filters: Filters, lines: int, emit: Emit, note: Note,
               stop: threading.Event | None = None) -> None:
        """Print the last rows, then each new one until ``stop`` (or Ctrl-C)."""
        top = self.top()
        for _, record in self.tail(filters, lines, top):
            emit(record)
        Follower(self, filters, Arrivals(top), emit, note).run(stop)


class Arrivals:
    """Which rows following has shown: every id up to ``floor``, and the ids
    shown above it. The floor rises to the table's highest id only SETTLE
    seconds after that id was seen, so a lower id that commits a little
    later is still found; it rises with rows of other programs too, so a
    narrow filter does not look at ever more rows."""

    def __init__(self, floor: int):
        self.floor = floor
        self.recent: set[int] = set()
        self.tops: deque[tuple[float, int]] = deque()  # (when, the highest id then)

    def add(self, ids: Iterable[int], top: int, now: float) -> None:
        self.recent.update(ids)
        self.tops.append((now, top))
        while self.tops and self.tops[0][0] <= now - SETTLE:
            self.floor = max(self.floor, self.tops.popleft()[1])
        self.recent = {i for i in self.recent if i > self.floor}


class Follower:
    """Following the table across notifications, polls and outages."""

    def __init__(self, table: Table, filters: Filters, arrivals: Arrivals, emit: Emit,
                 note: Note):
        self.table, self.filters, self.arrivals = table, filters, arrivals
        self.emit, self.note = emit, note
        self.listener: psycopg2.extensions.connection | None = None
        self.away = False

    def run(self, stop: threading.Event | None) -> None:
        try:
            while stop is None or not stop.is_set():
                try:
                    self._step()
                except (psycopg2.Error, DatabaseError) as exc:  # a failed reconnect too
                    self._lost(exc)
                    if _pause(stop, RETRY):
                        return
        finally:
            self._close()

    def _step(self) -> None:
        if self.listener is None:
            self._reconnect()
        top = self.table.top()  # before the rows: every id up to it was taken
        rows = self.table.newer(self.filters, self.arrivals)
        for _, record in rows:
            self.emit(record)
        self.arrivals.add((row_id for row_id, _ in rows), top, time.monotonic())
        if select.select([self.listener], [], [], POLL)[0]:
            self.listener.poll()
            self.listener.notifies.clear()  # one look serves every notification

    def _reconnect(self) -> None:
        if self.table.conn.closed:
            self.table.conn = connect(self.table.dsn)
        self.listener = connect(self.table.dsn)
        with self.listener.cursor() as cur:
            cur.execute(f"LISTEN {CHANNEL}")
        if self.away:
            self.away = False
            self.note("note: the log database is back; following on")

    def _lost(self, exc: psycopg2.Error | DatabaseError) -> None:
        if not self.away:
            self.away = True
            detail = exc.message if isinstance(exc, DatabaseError) else _first_line(exc)
            self.note(f"note: the log database went away ({detail}); retrying every "
                      f"{RETRY:g}s (Ctrl-C ends)")
        self._close()

    def _close(self) -> None:
        for conn in (self.listener, self.table.conn):
            if conn is not None:
                conn.close()
        self.listener = None


# ---------------------------------------------------------------- the files


def _read_lines(handle, final: bool, partial: bytes) -> Iterator[tuple[str | None, bytes]]:
    """(line, b"") per complete line; at an unfinished last line (None, it)
    unless ``final``."""
    while chunk := handle.readline():
        chunk = partial + chunk
        partial = b""
        if not chunk.endswith(b"\n") and not final:
            yield None, chunk
            return
        yield chunk.rstrip(b"\n").decode("utf-8", "replace"), b""


class Tail:
    """The current file of one stream (``web0.log``), read as it grows.
    supervisord rotates by renaming it to ``web0.log.1`` and opening a new
    one: once the path is another inode, the old file (still open here) is
    read to its end and the new one from its start."""

    def __init__(self, path: Path, stream: str, host: str):
        self.path, self.stream, self.host = path, stream, host
        self.handle: BinaryIO | None = None
        self.inode: int | None = None
        self.partial = b""
        self.before: Record | None = None

    def records(self, final: bool = False) -> Iterator[Record]:
        """The lines not read yet (``final``: also an unfinished last one)."""
        if self.handle is None and not self._open():
            return
        for line, rest in _read_lines(self.handle, final, self.partial):
            if line is None:
                self.partial = rest
                return
            self.partial = b""
            self.before = logrecords.read(line, self.stream, self.host, self.before)
            yield self.before

    def poll(self) -> list[Record]:
        """Lines written since the last look, across a rotation."""
        try:
            inode = os.stat(self.path).st_ino
        except FileNotFoundError:
            inode = None  # between the rename and the new file
        found: list[Record] = []
        if self.handle is not None and inode not in (None, self.inode):
            found = list(self.records(final=True))
            self.close()
        elif self.handle is not None and self._truncated():
            self.handle.seek(0)  # cut in place: its lines start over
            self.partial, self.before = b"", None
        return found + list(self.records())

    def _truncated(self) -> bool:
        return os.fstat(self.handle.fileno()).st_size < self.handle.tell()

    def _open(self) -> bool:
        try:
            self.handle = open(self.path, "rb")  # noqa: SIM115 (kept open while following)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise _unreadable(self.path, exc) from None
        self.inode = os.fstat(self.handle.fileno()).st_ino
        return True

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
        self.handle, self.inode, self.partial, self.before = None, None, b"", None


def _unreadable(path: Path, exc: OSError) -> SalvusError:
    return SalvusError(f"cannot read {path} ({exc.strerror}); run `salvusctl logs` as the "
                       "user that owns the data folder, or as root")


def read_file(path: Path, stream: str, host: str) -> Iterator[Record]:
    """Every line of a rotated (finished) file, as records."""
    before = None
    try:
        with open(path, "rb") as handle:
            for line, _ in _read_lines(handle, True, b""):
                before = logrecords.read(line, stream, host, before)
                yield before
    except FileNotFoundError:
        return  # rotated away (dropped) since the folder was listed
    except OSError as exc:
        raise _unreadable(path, exc) from None


class Files:
    """The log files of DATA/logs, as one stream of records per program."""

    def __init__(self, folder: Path, host: str):
        self.folder, self.host = folder, host
        self.tails: dict[str, Tail] = {}

    def close(self) -> None:
        for tail in self.tails.values():
            tail.close()

    def streams(self) -> dict[str, list[Path]]:
        """Each stream's rotated files, oldest (highest number) first."""
        found: dict[str, list[tuple[int, Path]]] = {}
        for path in self.folder.glob("*.log*"):
            stream = logrecords.stream_of(path.name)
            if stream is not None and stream[1] > 0:
                found.setdefault(stream[0], []).append((stream[1], path))
            elif stream is not None:
                found.setdefault(stream[0], [])
        return {name: [p for _, p in sorted(files, reverse=True)]
                for name, files in found.items()}

    def programs(self) -> set[str]:
        return set(self.streams())

    def _tail(self, stream: str) -> Tail:
        if stream not in self.tails:
            self.tails[stream] = Tail(self.folder / f"{stream}.log", stream, self.host)
        return self.tails[stream]

    def _stream(self, stream: str, rotated: list[Path], final: bool) -> Iterator[Record]:
        for path in rotated:
            yield from read_file(path, stream, self.host)
        yield from self._tail(stream).records(final)

    def merged(self, filters: Filters, final: bool = True) -> Iterator[Record]:
        """Every matching record, the streams merged by time. A stream is
        read only if its name could match (its file holds its program's
        lines)."""
        wanted = {stream: rotated for stream, rotated in self.streams().items()
                  if not filters.names or any(named(n, stream) for n in filters.names)}
        streams = [self._stream(s, rotated, final) for s, rotated in sorted(wanted.items())]
        return (r for r in heapq.merge(*streams, key=lambda r: r.at) if filters.admits(r))

    def records(self, filters: Filters, lines: int | None) -> Iterable[Record]:
        return last(self.merged(filters), lines)

    def follow(self, filters: Filters, lines: int, emit: Emit, note: Note,
               stop: threading.Event | None = None) -> None:
        """Print the last records, then each line appended to a current file."""
        for record in last(self.merged(filters, final=False), lines):
            emit(record)
        while not _pause(stop, FILE_POLL):
            for stream in self.streams():  # a program started since
                if not filters.names or any(named(n, stream) for n in filters.names):
                    self._tail(stream)
            new = [r for tail in self.tails.values() for r in tail.poll()]
            for record in sorted(new, key=lambda r: r.at):
                if filters.admits(record):
                    emit(record)


# ---------------------------------------------------------------- the command


def source(dsn: str, instance: str, folder: Path, host: str, note: Note) -> Table | Files:
    """The table when the log database answers; else the files, said once."""
    try:
        table = Table(dsn, instance)
    except DatabaseError as exc:
        note(f"note: the log database is not reachable ({exc.message}); "
             f"reading the files in {folder}")
        return Files(folder, host)
    try:
        table.check()
    except psycopg2.Error as exc:
        table.close()
        why = ("has no log table yet (`salvusctl db migrate` makes it)"
               if isinstance(exc, psycopg2.errors.UndefinedTable)
               else f"does not let the log table be read ({_first_line(exc)})")
        note(f"note: the log database {why}; reading the files in {folder}")
        return Files(folder, host)
    return table


def show(appliance: Appliance, filters: Filters, follow: bool = False, lines: int | None = None,
         pager: bool = True) -> None:
    """The ``logs`` command on an Appliance."""
    folder = appliance.data.logs
    host = appliance.config.get("salvus", "host")

    def note(text: str) -> None:
        click.echo(text, err=True)

    def emit(record: Record) -> None:
        click.echo(format_record(record))

    chosen = source(appliance.log_dsn, appliance.instance, folder, host, note)
    try:
        files = chosen if isinstance(chosen, Files) else Files(folder, host)
        check_names(filters.names, [lambda: {p.name for p in appliance.programs},
                                    files.programs, chosen.programs])
        if follow:
            chosen.follow(filters, FOLLOW_LINES if lines is None else lines, emit, note)
        else:
            output(chosen.records(filters, lines), pager)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how following ends: quietly, exit 0
    except psycopg2.Error as exc:
        raise DatabaseError(f"reading the log table failed ({_first_line(exc)}); run "
                            "again, or see `salvusctl status postgres`") from None
    finally:
        chosen.close()
