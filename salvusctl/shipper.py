"""The log shipper: every line of every program's log file into the ``log`` table.

supervisord writes each program's output to ``DATA/logs/NAME.log`` and
rotates it (``NAME.log.1`` ... ``NAME.log.N``, N = ``[logs] file_backups``).
Those files are the spool: the programs never wait for the shipper or the
database, and nothing is written twice on disk. The shipper reads each file
from where it stands, parses each line (salvusctl/logrecords.py) and inserts
a batch of rows together with its new position in ``log_cursors``, in one
transaction: after a crash (kill -9) or a lost database it goes on from the
position the table holds, so each line reaches the table exactly once.

While the database is away (stopped, or frozen by SIGSTOP: every call has a
deadline) the shipper keeps every unshipped file open, so rotation cannot
take one from under it. When rotation deletes a file whose lines are not all
shipped, the spool's bound ((file_backups + 1) * file_mb per program) is
reached: those lines are dropped, counted, and the count is written in a line
of the shipper's own log, which is shipped like any other.

Database calls use an asynchronous connection driven with select() and a
deadline, so a frozen server costs a timeout, never a hang; a whole batch is
one multi-statement query (BEGIN ... COMMIT), since asynchronous connections
have no client-side transactions. A batch whose commit was not confirmed is
settled on the next connection by reading the cursors back.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg2
import psycopg2.extensions

from salvusctl import logline, logrecords
from salvusctl.watch import FolderWatch

CHANNEL = "salvus_log"  # NOTIFY'd with each batch: `salvusctl logs --follow` listens
HEAD = 64  # bytes that tell a file from another that got its inode number
CALL_TIMEOUT = 10.0  # seconds a database call may take before it counts as lost
IDLE = 0.05  # seconds between looks at the files when nothing wakes the shipper
WATCHED_IDLE = 1.0  # the same while inotify wakes it on every write (a safety net)
LINGER = 0.005  # seconds to gather more lines after a write woke the shipper
BUSY_LINGER = 0.05  # the same while the last batch was large (a steady stream)
BUSY_LINES = 500  # a batch this large means lines come fast
STREAM_BYTES = 512 * 1024  # most bytes of one stream in one batch (fairness)
BATCH_BYTES = 4 * 1024 * 1024
LONGEST = 1024 * 1024  # a line longer than this is cut into rows of this size
RETRY_MAX = 5.0
RETENTION_EVERY = 3600.0


class DatabaseAway(Exception):
    """The log database did not answer in time, or refused."""


def say(message: str, level: int = logging.INFO) -> None:
    logline.say(message, level)


# ---------------------------------------------------------------- files


@dataclass
class Held:
    """A log file the shipper holds open: rotation may rename or delete it,
    its content stays readable until it is closed."""

    inode: int
    fd: int

    def head(self) -> bytes:
        return os.pread(self.fd, HEAD, 0)

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def deleted(self) -> bool:
        return os.fstat(self.fd).st_nlink == 0

    def close(self) -> None:
        os.close(self.fd)


@dataclass
class Piece:
    """What one batch takes of one stream: its lines, where it ends, and how
    many lines came from each file (a file deleted meanwhile needs them)."""

    stream: Stream
    lines: list[bytes]
    end_index: int
    end_inode: int  # the file it ends in (the index changes when files go)
    end_position: int
    per_file: dict[int, int]


@dataclass
class Stream:
    """One program's log: its files oldest first, the shipped position in
    the oldest, and what is known about the lines before it."""

    name: str
    files: list[Held] = field(default_factory=list)
    position: int = 0
    known: bool = False  # the table's cursor has been applied
    before: logrecords.Record | None = None  # the last line shipped (continuations)
    dropped: int = 0  # lines rotated away unshipped, not yet reported
    unreadable: bool = False  # said so once

    def hold_new(self, present: list[Path]) -> None:
        """Open the files (oldest first) newer than the newest one held."""
        inodes = []
        for path in present:
            try:
                inodes.append(path.stat().st_ino)
            except FileNotFoundError:  # rotated meanwhile: the next look sees it
                return
        held = {f.inode for f in self.files}
        newest = max((i for i, ino in enumerate(inodes) if ino in held), default=-1)
        for path, inode in list(zip(present, inodes, strict=True))[newest + 1:]:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return
            except PermissionError:  # not ours to read (supervisord's own AUTO logs)
                if not self.unreadable:
                    say(f"cannot read {path}; its lines are not shipped", logging.WARNING)
                self.unreadable = True
                return
            if os.fstat(fd).st_ino != inode:  # renamed between stat and open
                os.close(fd)
                return
            self.files.append(Held(inode, fd))

    def drop_deleted(self) -> int:
        """Files rotated away with lines unshipped: count those lines, let the
        files go (that is the spool's bound). Only once the position is known."""
        if not self.known:
            return 0
        lost = 0
        for index, held in reversed(list(enumerate(self.files))):
            if not held.deleted():
                continue
            lost += count_lines(held, self.position if index == 0 else 0)
            held.close()
            del self.files[index]
            if index == 0:
                self.position = 0
        self.dropped += lost
        return lost

    def take(self, budget: int) -> Piece | None:
        """Complete lines after the position, up to about ``budget`` bytes,
        across rotated files (a line may begin in one and end in the next)."""
        index, position, carry = 0, self.position, b""
        lines: list[bytes] = []
        per_file: dict[int, int] = {}
        end = (0, self.position)
        # A first line longer than the budget is still read whole (up to LONGEST).
        while (budget > 0 or not lines) and index < len(self.files):
            held = self.files[index]
            chunk = os.pread(held.fd, min(budget, STREAM_BYTES), position)
            if not chunk:
                index, position = index + 1, 0
                continue
            budget -= len(chunk)
            data = carry + chunk
            cut = data.rfind(b"\n")
            if cut >= 0:
                found = data[:cut].split(b"\n")
                lines += found
                per_file[held.inode] = per_file.get(held.inode, 0) + len(found)
                end = (index, position + cut - len(carry) + 1)
                carry = data[cut + 1:]
            else:
                carry = data
            position += len(chunk)
            if len(carry) > LONGEST:  # no end in sight: what there is makes a line
                lines.append(carry)
                per_file[held.inode] = per_file.get(held.inode, 0) + 1
                end, carry = (index, position), b""
        if not lines:
            return None
        return Piece(self, lines, end[0], self.files[end[0]].inode, end[1], per_file)

    def advance(self, index: int, position: int) -> None:
        for held in self.files[:index]:
            held.close()
        del self.files[:index]
        self.position = position

    def locate(self, inode: int, head: bytes) -> int | None:
        """The index of the held file the table's cursor names, if held."""
        for index, held in enumerate(self.files):
            if held.inode == inode and held.head()[:len(head)] == head:
                return index
        return None

    def close(self) -> None:
        for held in self.files:
            held.close()
        self.files.clear()


def count_lines(held: Held, start: int) -> int:
    count, position = 0, start
    while chunk := os.pread(held.fd, 1 << 20, position):
        count += chunk.count(b"\n")
        position += len(chunk)
    return count


def log_files(folder: Path) -> dict[str, list[Path]]:
    """Each stream's files in ``folder``, oldest first."""
    found: dict[str, list[tuple[int, Path]]] = {}
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return {}
    for entry in entries:
        named = logrecords.stream_of(entry.name)
        if named is not None and entry.is_file(follow_symlinks=False):
            found.setdefault(named[0], []).append((named[1], Path(entry.path)))
    return {name: [p for _, p in sorted(files, reverse=True)] for name, files in found.items()}


# ---------------------------------------------------------------- database


def wait(conn, timeout: float) -> None:
    """Drive an asynchronous connection until its call is done, or raise
    DatabaseAway after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            state = conn.poll()
        except psycopg2.Error as exc:
            raise DatabaseAway(first_line(exc)) from None
        if state == psycopg2.extensions.POLL_OK:
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise DatabaseAway(f"no answer within {timeout:g}s")
        readers = [conn.fileno()] if state == psycopg2.extensions.POLL_READ else []
        writers = [conn.fileno()] if state == psycopg2.extensions.POLL_WRITE else []
        select.select(readers, writers, [], left)


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class Database:
    """The log database through one asynchronous connection, every call
    with a deadline."""

    def __init__(self, dsn_file: Path, timeout: float = CALL_TIMEOUT):
        self.dsn_file = dsn_file
        self.timeout = timeout
        self.conn = None

    def open(self) -> None:
        try:
            dsn = self.dsn_file.read_text().strip()
            self.conn = psycopg2.connect(dsn, async_=True)
        except (OSError, psycopg2.Error) as exc:
            raise DatabaseAway(first_line(exc)) from None
        try:
            wait(self.conn, self.timeout)
        except DatabaseAway:
            self.close()
            raise

    def run(self, sql: str, params=None) -> list[tuple]:
        """One call (several statements may make one transaction); its rows."""
        if self.conn is None:
            self.open()
        try:
            cursor = self.conn.cursor()
            cursor.execute(sql, params)
            wait(self.conn, self.timeout)
            return cursor.fetchall() if cursor.description else []
        except DatabaseAway:
            self.close()
            raise
        except psycopg2.Error as exc:
            self.close()
            raise DatabaseAway(first_line(exc)) from None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = None


INSERT = """
BEGIN;
INSERT INTO log (at, instance, host, program, pid, level, session, browser, message)
SELECT at::timestamptz, %(instance)s, host, program, pid, level, session, browser, message
FROM unnest(%(at)s::text[], %(host)s::text[], %(program)s::text[], %(pid)s::integer[],
            %(level)s::text[], %(session)s::text[], %(browser)s::text[], %(message)s::text[])
     AS line(at, host, program, pid, level, session, browser, message);
INSERT INTO log_cursors (instance, host, stream, inode, position, head)
SELECT %(instance)s, %(me)s, stream, inode, position, head
FROM unnest(%(streams)s::text[], %(inodes)s::bigint[], %(positions)s::bigint[],
            %(heads)s::bytea[]) AS cursor(stream, inode, position, head)
ON CONFLICT (instance, host, stream) DO UPDATE
SET inode = excluded.inode, position = excluded.position, head = excluded.head,
    shipped = now();
NOTIFY """ + CHANNEL + """;
COMMIT;
"""
CURSORS = "SELECT stream, inode, position, head FROM log_cursors WHERE instance = %s AND host = %s"
RETIRE = """
DELETE FROM log WHERE id IN (
    SELECT id FROM log WHERE instance = %s AND host = %s
      AND at < now() - make_interval(days => %s) LIMIT %s)
"""


# ---------------------------------------------------------------- the shipper


@dataclass
class Uncertain:
    """A batch whose commit was sent but not confirmed."""

    pieces: list[Piece]


class Shipper:
    def __init__(self, logs: Path, database: Database, instance: str, host: str,
                 keep_days: int, retire_batch: int = 10000):
        self.logs = logs
        self.db = database
        self.instance = instance
        self.host = host
        self.keep_days = keep_days
        self.retire_batch = retire_batch
        self.streams: dict[str, Stream] = {}
        self.cursors: dict[str, tuple[int, int, bytes]] | None = None  # None: not read yet
        self.uncertain: Uncertain | None = None
        self.away_since: float | None = None
        self.next_try = 0.0
        self.backoff = 0.2
        self.next_retire = 0.0
        self.retired = 0
        self.last_batch = 0  # lines in the last batch shipped
        self.stopping = False

    # -- the files

    def look(self) -> None:
        """Hold new files, let go of deleted ones (counting what they lose)."""
        for name, present in log_files(self.logs).items():
            stream = self.streams.get(name)
            if stream is None:
                stream = self.streams[name] = Stream(name)
                stream.hold_new(present)
                self.apply_cursor(stream)
            else:
                stream.hold_new(present)
        for stream in self.streams.values():
            stream.drop_deleted()
            if stream.dropped and self.uncertain is None:
                self.report_dropped(stream)

    def report_dropped(self, stream: Stream) -> None:
        say(f"dropped {stream.dropped} lines of {stream.name}: its log files were rotated "
            "away before the log database took them; raise [logs] file_mb or file_backups "
            "for a larger spool", logging.WARNING)
        stream.dropped = 0

    # -- the cursors in the table

    def read_cursors(self) -> None:
        rows = self.db.run(CURSORS, (self.instance, self.host))
        self.cursors = {stream: (inode, position, bytes(head))
                        for stream, inode, position, head in rows}
        for stream in self.streams.values():
            self.apply_cursor(stream)
        self.settle()

    def apply_cursor(self, stream: Stream) -> None:
        """Where the table says the stream stands; moves it forward only (a
        batch whose commit was not confirmed may have been committed)."""
        if self.cursors is None:
            return
        cursor = self.cursors.get(stream.name)
        if cursor is None:
            stream.known = True
            return
        inode, position, head = cursor
        index = stream.locate(inode, head)
        if index is not None and (not stream.known or (index, position) > (0, stream.position)):
            stream.advance(index, position)
        elif index is None and not stream.known:
            say(f"{stream.name}: lines written while the shipper was not running were rotated "
                "away before it came back; how many is not known", logging.WARNING)
        stream.known = True

    def settle(self) -> None:
        """A batch sent before the database went away: if its cursors are in
        the table, it was committed; lines of it in files rotated away since
        were shipped, not dropped."""
        if self.uncertain is None:
            return
        for piece in self.uncertain.pieces:
            cursor = self.cursors.get(piece.stream.name)
            held = {f.inode for f in piece.stream.files}
            committed = cursor is not None and cursor[:2] == (piece.end_inode,
                                                              piece.end_position)
            if committed:
                piece.stream.dropped -= sum(n for inode, n in piece.per_file.items()
                                            if inode not in held)
        self.uncertain = None
        for stream in self.streams.values():
            if stream.dropped > 0:
                self.report_dropped(stream)
            stream.dropped = max(stream.dropped, 0)

    # -- shipping

    def collect(self) -> list[Piece]:
        pieces, budget = [], BATCH_BYTES
        for stream in self.streams.values():
            if not stream.known or budget <= 0:
                continue
            piece = stream.take(min(STREAM_BYTES, budget))
            if piece is not None:
                pieces.append(piece)
                budget -= sum(len(line) + 1 for line in piece.lines)
        return pieces

    def ship(self, pieces: list[Piece]) -> int:
        """Insert the pieces' lines and their streams' new positions at once."""
        columns: dict[str, list] = {k: [] for k in (
            "at", "host", "program", "pid", "level", "session", "browser", "message")}
        lasts = {}
        now = datetime.now(UTC)
        for piece in pieces:
            before = piece.stream.before
            for raw in piece.lines:
                text = raw.decode("utf-8", "replace")
                record = logrecords.read(text, piece.stream.name, self.host, before, now)
                for key, values in columns.items():
                    values.append(getattr(record, key))
                before = record
            lasts[piece.stream.name] = before
        columns["at"] = [at.isoformat() for at in columns["at"]]
        params = {**columns, "instance": self.instance, "me": self.host,
                  "streams": [p.stream.name for p in pieces],
                  "inodes": [p.end_inode for p in pieces],
                  "positions": [p.end_position for p in pieces],
                  "heads": [psycopg2.Binary(p.stream.files[p.end_index].head()) for p in pieces]}
        self.uncertain = Uncertain(pieces)
        self.db.run(INSERT, params)
        self.uncertain = None
        for piece in pieces:
            piece.stream.advance(piece.end_index, piece.end_position)
            piece.stream.before = lasts[piece.stream.name]
        self.last_batch = len(columns["message"])
        return self.last_batch

    def retire(self) -> bool:
        """One batch of rows older than keep_days; True when more may remain."""
        removed = self.db.run(RETIRE + " RETURNING 1", (
            self.instance, self.host, self.keep_days, self.retire_batch))
        self.retired += len(removed)
        if len(removed) < self.retire_batch:
            if self.retired:
                say(f"removed {self.retired} log rows older than {self.keep_days} days "
                    "([logs] keep_days)")
            self.retired = 0
            self.next_retire = time.monotonic() + RETENTION_EVERY
            return False
        return True

    # -- the loop

    def step(self) -> bool:
        """Look at the files, ship one batch or retire one; True when there
        may be more to do at once."""
        self.look()
        if self.db.conn is None and time.monotonic() < self.next_try:
            return False
        try:
            if self.db.conn is None or self.cursors is None:
                self.db.open()
                self.read_cursors()
                self.reachable()
            pieces = self.collect()
            if pieces:
                self.ship(pieces)
                return True
            if time.monotonic() >= self.next_retire:
                return self.retire()
        except DatabaseAway as exc:
            self.away(str(exc))
        return False

    def away(self, why: str) -> None:
        self.db.close()
        self.cursors = None if self.uncertain is not None else self.cursors
        if self.away_since is None:
            self.away_since = time.monotonic()
            say(f"log database not reachable ({why}); the lines wait in their files",
                logging.WARNING)
        self.next_try = time.monotonic() + self.backoff
        self.backoff = min(self.backoff * 2, RETRY_MAX)

    def reachable(self) -> None:
        if self.away_since is not None:
            say(f"log database reachable again after {time.monotonic() - self.away_since:.1f}s;"
                " shipping the lines held")
        self.away_since = None
        self.backoff = 0.2

    def pause(self, idle: float) -> float:
        """How long to wait for a change: ``idle``, or until the next try
        of a database that is away, if that comes sooner."""
        if self.db.conn is None and self.next_try > time.monotonic():
            return max(min(idle, self.next_try - time.monotonic()), 0.01)
        return idle

    def run(self) -> None:
        watch = FolderWatch(self.logs)
        idle = WATCHED_IDLE if watch.open() else IDLE
        try:
            while not self.stopping:
                if not self.step() and watch.wait(self.pause(idle)):
                    # Woken by a write: let the writer go on a moment, so that
                    # a steady stream ships in batches, not a transaction per
                    # write (each commit waits for the disk).
                    time.sleep(BUSY_LINGER if self.last_batch >= BUSY_LINES else LINGER)
        finally:
            watch.close()
            for stream in self.streams.values():
                stream.close()
            self.db.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="salvusctl.shipper")
    parser.add_argument("--logs", required=True, help="the folder of the programs' logs")
    parser.add_argument("--dsn-file", required=True, help="file holding the log database DSN")
    parser.add_argument("--instance", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--keep-days", type=int, default=30)
    parser.add_argument("--retire-batch", type=int, default=10000)
    args = parser.parse_args(argv)
    logline.setup("shipper", logline.secrets_in(Path(args.dsn_file)))
    shipper = Shipper(Path(args.logs), Database(Path(args.dsn_file)), args.instance,
                      args.host, args.keep_days, args.retire_batch)

    def stop(_signum, _frame):
        shipper.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    say(f"shipping {args.logs} into the log table of instance {args.instance}")
    shipper.run()
    say("stopped")


if __name__ == "__main__":
    main()
