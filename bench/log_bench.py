"""Log shipping: figures of the shipper (issue 12) beside a per-line INSERT handler.

On an appliance with one frontend and one worker (python engine), a
benchmark writes its own stream ``DATA/logs/bench.log`` in our line format
(salvusctl/logline.py) and reads the ``log`` table back:

- backlog: the shipper is stopped, N lines (``--lines``) are appended, the
  shipper is started: the time until ``count(*)`` of those rows is N (polled
  every 0.2 s), from the start command;
- steady: with the shipper running, a writer thread appends ``--rate`` lines
  a second for ``--seconds``: does the shipper keep up (its backlog when the
  writer stops, the longest a line waited for its row)? The table is polled
  every 50 ms for the newest line's sequence number, so a delay here is
  known to about 50 ms;
- write->row delay: one line at a time, 50 ms apart, with the shipper idle:
  from the write (one write(2) of the line) until its row is visible to
  another connection (that connection LISTENs salvus_log and looks on each
  NOTIFY, or every 20 ms);
- the cost to the logging program: one ``logger.info`` through our handler
  (a line written to a file, as a program's stderr is) and the program's
  lines a second, also while PostgreSQL is frozen (SIGSTOP) for 5 s.

The peer is what a developer would otherwise write, since Jupyter keeps no
central log (its server and kernels log to files and stdout): a
``logging.Handler`` that INSERTs each record into the same ``log`` table on
its own connection and commits per record, in the logging program. It is
measured on the same work: lines a second, cost per call, write->row delay,
and how long one logging call takes while PostgreSQL is frozen (capped at
10 s).

Everything shares this host's cores (PostgreSQL, the shipper, the
appliance's other programs and this process), and this process writes the
file itself: a real program's lines go through supervisord's pipe first.

    python bench/log_bench.py [--lines N] [--rate R] [--seconds S] [--samples N]

writes bench/results/logs.json and logs.png.
"""

from __future__ import annotations

import argparse
import bisect
import json
import logging
import os
import select
import signal
import socket
import statistics
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg2  # noqa: E402

from bench.common import percentile, print_table, save  # noqa: E402
from salvusctl import logline, shipper  # noqa: E402
from tests.helpers import processes_of, run, started_appliance  # noqa: E402

PEER = "a per-line INSERT logging handler (Jupyter keeps no central log)"
FREEZE = 5.0  # seconds PostgreSQL is stopped
CAP = 10.0  # longest wait for one logging call of the peer during the freeze
FREEZE_LINES = 10_000


# ----------------------------------------------------------------- lines and files

class Lines:
    """Lines of one program in our format, appended to DATA/logs/bench.log
    with one write(2) per call, as a program's line reaches its file."""

    def __init__(self, path: Path, program: str):
        self.formatter = logline.LineFormatter(program)
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        os.chmod(path, 0o644)  # the shipper runs as the service user

    def make(self, message: str) -> bytes:
        record = logging.LogRecord(logline.LOGGER, logging.INFO, __file__, 0, message, None,
                                   None)
        return (self.formatter.format(record) + "\n").encode()

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def close(self) -> None:
        os.close(self.fd)


def file_logger(name: str, path: Path, program: str) -> logging.Logger:
    """A logger as our programs have one: our formatter, a StreamHandler
    (flushed per record) on a file opened for appending."""
    logger = logging.getLogger(f"logbench.{name}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = logging.StreamHandler(open(path, "a", encoding="utf-8"))  # noqa: SIM115
    handler.setFormatter(logline.LineFormatter(program))
    logger.addHandler(handler)
    os.chmod(path, 0o644)
    return logger


class InsertHandler(logging.Handler):
    """The peer: each record INSERTed into the log table on its own
    connection, committed per record, synchronously in the logging program."""

    def __init__(self, dsn: str, instance: str, program: str):
        super().__init__()
        self.conn = psycopg2.connect(dsn)
        self.instance, self.program = instance, program
        self.host = socket.gethostname()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            with self.conn.cursor() as cursor:
                cursor.execute(
                    "INSERT INTO log (at, instance, host, program, pid, level, message) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    (datetime.fromtimestamp(record.created, UTC), self.instance, self.host,
                     self.program, record.process, record.levelname, record.getMessage()))
            self.conn.commit()
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        self.conn.close()
        super().close()


def insert_logger(name: str, dsn: str, instance: str, program: str) -> logging.Logger:
    logger = logging.getLogger(f"logbench.{name}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(InsertHandler(dsn, instance, program))
    return logger


def close_logger(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


# ----------------------------------------------------------------- the table

def log_dsn(data: Path) -> str:
    """The log database's DSN (the shipper's file), else the appliance's."""
    for name in ("log_dsn", "dsn"):
        path = data / "secrets" / name
        if path.exists():
            return path.read_text().strip()
    raise FileNotFoundError(data / "secrets" / "dsn")


def instance_of(data: Path) -> str:
    from salvusctl import config as configfile

    return configfile.read_raw(data / "salvus.conf").get(("salvus", "instance"), "bench")


class Table:
    """A connection of our own that reads the log table and LISTENs
    salvus_log (the shipper NOTIFYs with each batch)."""

    def __init__(self, dsn: str):
        self.conn = psycopg2.connect(dsn)
        self.conn.autocommit = True
        self.cursor = self.conn.cursor()
        self.cursor.execute("LISTEN salvus_log")

    def one(self, sql: str, params=()) -> tuple | None:
        self.cursor.execute(sql, params)
        return self.cursor.fetchone()

    def count(self, program: str) -> int:
        return self.one("SELECT count(*) FROM log WHERE program = %s", (program,))[0]

    def newest_seq(self, program: str) -> int:
        """The highest sequence number (the message's last word) of the
        program's newest rows; -1 if none."""
        self.cursor.execute("SELECT message FROM log WHERE program = %s ORDER BY at DESC "
                            "LIMIT 5", (program,))
        return max((int(m.rsplit(" ", 1)[1]) for (m,) in self.cursor.fetchall()), default=-1)

    def wait_row(self, program: str, message: str, since: float, timeout: float = 10.0
                 ) -> float:
        """Seconds from ``since`` (perf_counter) until the row is visible:
        looked for at once, then on each NOTIFY or every 20 ms."""
        deadline = time.perf_counter() + timeout
        while True:
            if self.one("SELECT 1 FROM log WHERE program = %s AND message = %s",
                        (program, message)):
                return time.perf_counter() - since
            if time.perf_counter() > deadline:
                raise TimeoutError(f"no row for {message!r} within {timeout:g}s")
            select.select([self.conn], [], [], 0.02)
            self.conn.poll()
            self.conn.notifies.clear()

    def close(self) -> None:
        self.conn.close()


# ----------------------------------------------------------------- the measures

def backlog(data: Path, table: Table, count: int) -> dict:
    """Shipper stopped, ``count`` lines appended, shipper started: seconds
    until all are rows (count(*) every 0.2 s)."""
    run(data, "stop", "shipper")
    lines = Lines(data / "logs" / "bench.log", "bench")
    made = time.perf_counter()
    try:
        for start in range(0, count, 10_000):
            lines.write(b"".join(lines.make(f"backlog line {i}")
                                for i in range(start, min(count, start + 10_000))))
    finally:
        lines.close()
    written = time.perf_counter() - made
    began = time.perf_counter()
    run(data, "start", "shipper")
    started = time.perf_counter() - began
    shipper_pid = program_pid(data, "shipper")
    postmaster = program_pid(data, "postgres")
    postgres_before = cpu_seconds([postmaster, *descendants(postmaster)])
    deadline = began + max(180.0, count / 1000)
    samples, query_s = [], []
    while True:
        asked = time.perf_counter()
        shipped = table.count("bench")
        now = time.perf_counter()
        query_s.append(now - asked)
        samples.append((now - began, shipped))
        if shipped >= count or now > deadline:
            break
        time.sleep(0.2)
    shipper_cpu = sum(cpu_seconds([shipper_pid]).values())
    postgres_after = cpu_seconds([postmaster, *descendants(postmaster)])
    postgres_cpu = sum(v - postgres_before.get(pid, 0.0) for pid, v in postgres_after.items())
    elapsed, shipped = samples[-1]
    first = next((s for s in samples if s[1] > 0), samples[-1])
    steady = ((shipped - first[1]) / (elapsed - first[0])) if elapsed > first[0] else float("nan")
    return {"lines": count, "shipped": shipped, "all_shipped": shipped == count,
            "seconds_from_start_command": elapsed, "start_command_s": started,
            "lines_per_s": shipped / elapsed,
            "first_rows_after_s": first[0], "lines_per_s_after_first_rows": steady,
            "shipper_cpu_s": shipper_cpu, "postgres_cpu_s": postgres_cpu,
            "writing_the_file_s": written, "count_query_ms_p50": statistics.median(query_s) * 1e3,
            "samples": [(round(t, 3), n) for t, n in samples]}


def steady(data: Path, table: Table, rate: int, seconds: float) -> dict:
    """A writer thread appends ``rate`` lines a second for ``seconds`` while
    the shipper runs; the table is polled every 50 ms for the newest line."""
    program = "bench-steady"
    lines = Lines(data / "logs" / "bench.log", program)
    writes: list[tuple[float, int]] = []  # (time after the write, last seq in it)
    done = threading.Event()

    def writer() -> None:
        began, seq = time.perf_counter(), 0
        try:
            while (now := time.perf_counter()) - began < seconds:
                target = int((now - began) * rate)
                if target > seq:
                    lines.write(b"".join(lines.make(f"steady line {i}")
                                         for i in range(seq, target)))
                    seq = target
                    writes.append((time.perf_counter(), seq - 1))
                time.sleep(0.005)
        finally:
            done.set()

    thread = threading.Thread(target=writer, daemon=True)
    began = time.perf_counter()
    thread.start()
    polls: list[tuple[float, int]] = []
    at_writer_end = None
    try:
        while True:
            seq = table.newest_seq(program)
            now = time.perf_counter()
            polls.append((now, seq))
            if done.is_set() and at_writer_end is None:
                at_writer_end = (now, seq)
            total = writes[-1][1] if writes else -1
            if done.is_set() and seq >= total:
                break
            if now - began > seconds + 120:
                break
            time.sleep(0.05)
    finally:
        done.wait(seconds + 30)
        thread.join(5)
        lines.close()
    total = writes[-1][1] + 1
    writer_s = writes[-1][0] - began
    # Each line's delay: the first poll that saw it, minus its write.
    poll_times = [t for t, _ in polls]
    poll_seqs, highest = [], -1
    for _, seq in polls:  # the shipper ships in order: what was seen stays seen
        highest = max(highest, seq)
        poll_seqs.append(highest)
    delays, previous = [], -1
    for written_at, last in writes:
        index = bisect.bisect_left(poll_seqs, last)
        if index < len(polls):
            delays.extend([poll_times[index] - written_at] * (last - previous))
        previous = last
    end_time, end_seq = at_writer_end or polls[-1]
    drained = polls[-1][1] + 1 >= total
    return {"rate_asked": rate, "seconds": seconds, "lines_written": total,
            "rate_written": total / writer_s,
            "backlog_at_writer_end": total - (end_seq + 1),
            "drained_s_after_writer_end": (polls[-1][0] - end_time) if drained else None,
            "all_shipped": drained,
            "shipped_rate": (polls[-1][1] + 1) / (polls[-1][0] - began),
            "delay_ms_p50": percentile(delays, 50) * 1e3,
            "delay_ms_p99": percentile(delays, 99) * 1e3,
            "delay_ms_max": max(delays) * 1e3 if delays else float("nan")}


def ours_delay(data: Path, table: Table, samples: int, tag: str) -> list[float]:
    lines = Lines(data / "logs" / "bench.log", "bench-delay")
    delays = []
    try:
        for i in range(samples):
            time.sleep(0.05)
            message = f"delay {tag} {i}"
            line = lines.make(message)
            since = time.perf_counter()
            lines.write(line)
            delays.append(table.wait_row("bench-delay", message, since))
    finally:
        lines.close()
    return delays


def peer_delay(logger: logging.Logger, table: Table, samples: int, tag: str) -> list[float]:
    delays = []
    for i in range(samples):
        time.sleep(0.05)
        message = f"delay {tag} {i}"
        since = time.perf_counter()
        logger.info(message)
        delays.append(table.wait_row("naive-delay", message, since))
    return delays


def calls(logger: logging.Logger, most: int, seconds: float, what: str) -> dict:
    """Time each logging call, up to ``most`` calls or ``seconds``."""
    durations = []
    began = time.perf_counter()
    for i in range(most):
        start = time.perf_counter()
        logger.info("%s call %d", what, i)
        durations.append(time.perf_counter() - start)
        if start - began > seconds:
            break
    wall = time.perf_counter() - began
    return {"calls": len(durations), "lines_per_s": len(durations) / wall,
            "us_p50": percentile(durations, 50) * 1e6, "us_p99": percentile(durations, 99) * 1e6,
            "us_mean": statistics.mean(durations) * 1e6}


def program_pid(data: Path, name: str) -> int:
    rows = json.loads(run(data, "status", "--json", check=False).stdout)
    return next(r["pid"] for r in rows if r["name"] == name and r["state"] == "RUNNING")


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """user + system CPU seconds each process has used so far."""
    found = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return found


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        found += map(int, children)
        todo += map(int, children)
    return found


def postgres_tree(data: Path, folder: Path) -> list[int]:
    """PostgreSQL's postmaster and every process under it, postmaster first,
    after checking they are all this appliance's. Not its process group: each
    backend calls setsid() (InitPostmasterChild), so a killpg of the
    postmaster's group leaves the backends serving."""
    pid = program_pid(data, "postgres")
    tree = [pid, *descendants(pid)]
    ours = processes_of(folder)
    if os.getpid() in tree or not set(tree) <= set(ours):
        raise RuntimeError(f"PostgreSQL's processes {tree} are not all this appliance's")
    return tree


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            continue


def freeze(data: Path, folder: Path, table: Table, peer: logging.Logger) -> dict:
    """PostgreSQL stopped for FREEZE s: ours writes FREEZE_LINES lines
    meanwhile; the peer makes one logging call (waited for up to CAP s)."""
    tree = postgres_tree(data, folder)
    ours = file_logger("freeze", data / "logs" / "bench.log", "bench-freeze")
    peer_call: dict = {}

    def one_call() -> None:
        start = time.perf_counter()
        peer.info("during the freeze")
        peer_call["s"] = time.perf_counter() - start

    thread = threading.Thread(target=one_call, daemon=True)
    durations = []
    try:
        stopped = time.perf_counter()
        signal_all(tree, signal.SIGSTOP)  # the postmaster first: it forks no more
        late = [p for p in descendants(tree[0]) if p not in tree]  # forked meanwhile
        tree += late
        signal_all(late, signal.SIGSTOP)
        thread.start()
        for i in range(FREEZE_LINES):
            start = time.perf_counter()
            ours.info("freeze line %d", i)
            durations.append(time.perf_counter() - start)
        ours_wall = time.perf_counter() - stopped
        time.sleep(max(0.0, FREEZE - (time.perf_counter() - stopped)))
    finally:
        signal_all(tree, signal.SIGCONT)
        resumed = time.perf_counter()
        close_logger(ours)
    thread.join(max(0.0, CAP - (time.perf_counter() - stopped)))
    peer_s = peer_call.get("s")
    caught_up = None
    deadline = time.perf_counter() + 60
    while time.perf_counter() < deadline:
        if table.count("bench-freeze") >= FREEZE_LINES:
            caught_up = time.perf_counter() - resumed
            break
        time.sleep(0.05)
    return {"freeze_s": resumed - stopped, "processes_stopped": len(tree),
            "ours_lines": FREEZE_LINES,
            "ours_wall_ms": ours_wall * 1e3, "ours_call_ms_max": max(durations) * 1e3,
            "ours_call_us_p50": percentile(durations, 50) * 1e6,
            "peer_call_ms": (peer_s if peer_s is not None else CAP) * 1e3,
            "peer_call_returned": peer_s is not None,
            "ours_lines_in_table_s_after_sigcont": caught_up}


# ----------------------------------------------------------------- report

def chart(rows: list[dict], path: Path) -> None:
    """save()'s chart names the peer "jupyter"; this one names it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 1, figsize=(8, 1.1 * len(rows) + 0.8))
    for ax, row in zip(axes, rows, strict=True):
        ax.barh(["INSERT per line", "salvus shipper"], [row["peer"], row["ours"]],
                color=["#b0b7c3", "#1d3557"])
        better = "higher" if row.get("better") == "higher" else "lower"
        ax.set_title(f"{row['metric']} ({row['unit']}, {better} is better)", fontsize=9,
                     loc="left")
        ax.tick_params(labelsize=8)
        for i, value in enumerate([row["peer"], row["ours"]]):
            ax.text(value, i, f" {value:.3g}", va="center", fontsize=8)
        ax.set_xlim(0, max(row["peer"], row["ours"]) * 1.25 or 1)
    fig.suptitle("Log lines into PostgreSQL: the shipper vs a per-line INSERT handler",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def secs(value: float | None) -> str:
    return "never (deadline)" if value is None else f"{value:.2f} s"


def row(metric: str, ours: float, peer: float, unit: str, better: str, **detail) -> dict:
    return {"metric": metric, "ours": ours, "peer": peer, "unit": unit, "better": better,
            **({"detail": detail} if detail else {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=500_000, help="backlog lines")
    parser.add_argument("--rate", type=int, default=20_000, help="steady lines a second")
    parser.add_argument("--seconds", type=float, default=10.0, help="steady phase length")
    parser.add_argument("--samples", type=int, default=200, help="write->row delay samples")
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:8]
    with started_appliance("salvus-logbench-", "--web", "1", "--workers", "1",
                           config={("worker", "engine"): "python"}) as (data, _base, _):
        folder = data.parent
        dsn, instance = log_dsn(data), instance_of(data)
        table = Table(dsn)
        settings = {name: table.one(f"SHOW {name}")[0] for name in ("fsync", "synchronous_commit")}
        loggers: list[logging.Logger] = []
        try:
            time.sleep(2)  # the start's own lines shipped: the shipper idle
            print("write->row delay ...", flush=True)
            ours_delays = ours_delay(data, table, args.samples, tag)
            naive_delay = insert_logger("delay", dsn, instance, "naive-delay")
            loggers.append(naive_delay)
            peer_delays = peer_delay(naive_delay, table, args.samples, tag)
            print("cost per logging call ...", flush=True)
            ours_file = file_logger("calls", data / "logs" / "bench.log", "bench-calls")
            loggers.append(ours_file)
            ours_calls = calls(ours_file, 20_000, 5.0, "file")
            naive = insert_logger("calls", dsn, instance, "naive")
            loggers.append(naive)
            peer_calls = calls(naive, 20_000, 5.0, "insert")
            time.sleep(2)  # the file's lines shipped before the backlog
            print(f"backlog of {args.lines} lines ...", flush=True)
            drained = backlog(data, table, args.lines)
            print(f"steady {args.rate} lines/s for {args.seconds:g} s ...", flush=True)
            kept_up = steady(data, table, args.rate, args.seconds)
            print(f"PostgreSQL frozen {FREEZE:g} s ...", flush=True)
            frozen = freeze(data, folder, table, naive)
        finally:
            for logger in loggers:
                close_logger(logger)
            table.close()

    def ms(values: list[float], p: float) -> float:
        return percentile(values, p) * 1e3

    rows = [
        row("lines/s into the log table", drained["lines_per_s"], peer_calls["lines_per_s"],
            "lines/s", "higher", ours_from=f"backlog of {drained['lines']} lines, from "
            "`salvusctl start shipper` to count(*) = N",
            peer_from="one program logging as fast as it can", postgres=settings),
        row("logging call in the program, p50", ours_calls["us_p50"], peer_calls["us_p50"],
            "us", "lower", ours_calls=ours_calls, peer_calls=peer_calls),
        row("logging call in the program, p99", ours_calls["us_p99"], peer_calls["us_p99"],
            "us", "lower"),
        row("lines/s one program can log", ours_calls["lines_per_s"],
            peer_calls["lines_per_s"], "lines/s", "higher"),
        row("write->row delay, p50", ms(ours_delays, 50), ms(peer_delays, 50), "ms", "lower",
            samples=args.samples),
        row("write->row delay, p99", ms(ours_delays, 99), ms(peer_delays, 99), "ms", "lower"),
        row("write->row delay, max", max(ours_delays) * 1e3, max(peer_delays) * 1e3, "ms",
            "lower"),
        row(f"longest logging call, PostgreSQL frozen {FREEZE:g}s", frozen["ours_call_ms_max"],
            frozen["peer_call_ms"], "ms", "lower", freeze=frozen),
    ]
    shipper_rows = {"backlog": drained, "steady": kept_up}
    rows[0]["detail"]["backlog"] = {k: v for k, v in drained.items() if k != "samples"}
    rows[0]["detail"]["steady"] = kept_up

    print_table(f"Log lines into PostgreSQL: the Salvus shipper vs {PEER}; same appliance, "
                "same run", rows, peer="INSERT/line")
    backlog_text = (f"backlog {drained['shipped']}/{drained['lines']} lines in "
                    f"{drained['seconds_from_start_command']:.1f} s from the start command "
                    f"({drained['lines_per_s']:.0f} lines/s; "
                    f"{drained['lines_per_s_after_first_rows']:.0f} lines/s once rows came, "
                    f"first rows after {drained['first_rows_after_s']:.1f} s; CPU meanwhile: "
                    f"shipper {drained['shipper_cpu_s']:.1f} s, "
                    f"PostgreSQL {drained['postgres_cpu_s']:.1f} s)")
    steady_text = (f"steady {kept_up['rate_written']:.0f} lines/s written for "
                   f"{kept_up['seconds']:g} s: backlog {kept_up['backlog_at_writer_end']} lines "
                   f"when the writer stopped, drained "
                   f"{secs(kept_up['drained_s_after_writer_end'])} later; delay p50 "
                   f"{kept_up['delay_ms_p50']:.0f} ms, p99 {kept_up['delay_ms_p99']:.0f} ms, "
                   f"max {kept_up['delay_ms_max']:.0f} ms (polled every 50 ms)")
    freeze_text = (f"freeze {frozen['freeze_s']:.1f} s: ours wrote {FREEZE_LINES} lines in "
                   f"{frozen['ours_wall_ms']:.0f} ms (longest call "
                   f"{frozen['ours_call_ms_max']:.2f} ms), all in the table "
                   f"{secs(frozen['ours_lines_in_table_s_after_sigcont'])} after SIGCONT; the "
                   f"INSERT handler's one call took {frozen['peer_call_ms']:.0f} ms"
                   + ("" if frozen["peer_call_returned"] else " (still blocked at the cap)"))
    print(f"\nshipper: {backlog_text}\n{steady_text}\n{freeze_text}")
    json_path, png_path = save("logs", rows)
    chart(rows, png_path)
    kept = kept_up["backlog_at_writer_end"] <= kept_up["rate_asked"] * 0.5 and \
        kept_up["all_shipped"]
    print(f"\nSummary: the shipper moved a {drained['lines']}-line backlog into the log table "
          f"at {drained['lines_per_s']:.0f} lines/s (start command to last row), "
          f"{drained['lines_per_s'] / peer_calls['lines_per_s']:.1f}x the "
          f"{peer_calls['lines_per_s']:.0f} lines/s one program gets through a per-line "
          f"INSERT handler, and with {kept_up['rate_written']:.0f} lines/s written for "
          f"{kept_up['seconds']:g} s it {'kept up' if kept else 'fell behind'} (backlog "
          f"{kept_up['backlog_at_writer_end']} lines at the end, longest wait "
          f"{kept_up['delay_ms_max'] / 1e3:.2f} s). A logging call costs the program "
          f"{ours_calls['us_p50']:.0f} us (a line to a file) against "
          f"{peer_calls['us_p50']:.0f} us (an INSERT and a commit); write->row delay "
          f"p50 {ms(ours_delays, 50):.1f} / p99 {ms(ours_delays, 99):.1f} ms vs "
          f"{ms(peer_delays, 50):.1f} / {ms(peer_delays, 99):.1f} ms (the shipper wakes "
          f"on each write and waits {shipper.LINGER * 1e3:.0f} ms for more to batch, "
          f"{shipper.BUSY_LINGER * 1e3:.0f} ms while lines come fast). "
          f"With PostgreSQL frozen for "
          f"{FREEZE:g} s the program's longest line write took "
          f"{frozen['ours_call_ms_max']:.2f} ms, while the INSERT handler's one call "
          f"blocked the program for {frozen['peer_call_ms'] / 1e3:.1f} s.")
    print(f"\nwrote {json_path} and {png_path}")
    if not (drained["all_shipped"] and kept_up["all_shipped"]):
        print(f"NOTE: not every line was shipped: {json.dumps(shipper_rows)[:400]}")


if __name__ == "__main__":
    main()
