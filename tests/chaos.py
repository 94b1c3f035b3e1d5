"""Attacks on a real appliance and the canary that watches them.

The canary runs ``1+1`` through ``POST /api/execute`` every second from its
own loopback address (127.0.0.2, so the attacker's quotas are not its own)
and records each answer: how long it took and whether it was right. The
hostile tests (tests/test_hostile.py) assert containment and recovery from
it; the chaos bench (bench/chaos_bench.py) prints its figures per attack.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers import started_appliance

CANARY_ADDRESS = "127.0.0.2"
REPORT: list[str] = []  # a line per watched attack, shown at the end of a test run
ATTACKER_ADDRESS = "127.0.0.3"


def post(port: int, path: str, body: dict | bytes, source: str = ATTACKER_ADDRESS,
         headers: dict | None = None, timeout: float = 60) -> tuple[int, dict, dict]:
    """POST from a given loopback address; (status, JSON answer, headers)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout,
                                            source_address=(source, 0))
    try:
        connection.request("POST", path, data, {"Content-Type": "application/json",
                                                **(headers or {})})
        response = connection.getresponse()
        raw = response.read()
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = {"raw": raw.decode(errors="replace")}
        return response.status, answer, dict(response.getheaders())
    finally:
        connection.close()


def get(port: int, path: str, timeout: float = 30) -> tuple[int, bytes, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        connection.close()


def execute(port: int, code: str, timeout: float = 30, source: str = ATTACKER_ADDRESS):
    status, answer, _ = post(port, "/api/execute", {"code": code, "timeout": timeout},
                             source=source, timeout=timeout + 30)
    return status, answer


@dataclass
class Figures:
    name: str
    latencies: list[float] = field(default_factory=list)  # seconds, answered ones
    failures: int = 0

    @property
    def count(self) -> int:
        return len(self.latencies) + self.failures

    def percentile(self, p: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    def line(self) -> str:
        p50, p95 = self.percentile(50), self.percentile(95)
        shown = lambda v: "-" if v is None else f"{v * 1000:.0f} ms"  # noqa: E731
        return (f"{self.name:<34} canary p50 {shown(p50):>8}  p95 {shown(p95):>8}  "
                f"failures {self.failures}/{self.count}")


class Canary:
    """``1+1`` every ``every`` seconds in a thread of the test, until stopped."""

    def __init__(self, port: int, every: float = 1.0):
        self.port = port
        self.every = every
        self.figures = Figures("")
        self.results: list[bool] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def _once(self) -> None:
        start = time.perf_counter()
        try:
            status, answer = execute(self.port, "1+1", timeout=20, source=CANARY_ADDRESS)
            ok = status == 200 and answer.get("status") == "ok" and \
                (answer.get("result") or {}).get("text/plain") == "2"
        except OSError:
            ok = False
        with self.lock:
            self.results.append(ok)
            if ok:
                self.figures.latencies.append(time.perf_counter() - start)
            else:
                self.figures.failures += 1

    def _loop(self) -> None:
        while not self.stopping.is_set():
            self._once()
            self.stopping.wait(self.every)

    def start(self, name: str) -> Canary:
        self.figures = Figures(name)
        self.results = []
        self.stopping.clear()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> Figures:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=60)
        REPORT.append(self.figures.line())
        return self.figures

    def recovered(self, in_a_row: int = 3, timeout: float = 90) -> bool:
        """Wait until the canary's last ``in_a_row`` answers were right."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                last = self.results[-in_a_row:]
            if len(last) == in_a_row and all(last):
                return True
            time.sleep(0.2)
        return False


# What the hostile tests and the chaos bench run: python workers (they start
# fast), small limits (attacks end soon), quotas the canary never meets.
HOSTILE_CONFIG = {("worker", "engine"): "python", ("worker", "wall_time"): "10",
                  ("worker", "output_bytes"): "1000000", ("worker", "memory_mb"): "1024",
                  ("worker", "processes"): "50", ("web", "api_rate_per_ip"): "50/second",
                  ("web", "api_concurrent"): "4", ("web", "api_concurrent_per_ip"): "2"}


@contextlib.contextmanager
def appliance():
    """An appliance for attacks, in a temp folder: (data folder, web port)."""
    with started_appliance("salvus-hostile-", "--workers", "2",
                           config=HOSTILE_CONFIG) as (data, port, _):
        yield data, port


def pid_of(data: Path, name: str, salvusctl_run) -> int:
    rows = json.loads(salvusctl_run(data, "status", "--json", check=False).stdout)
    return next(row["pid"] for row in rows if row["name"] == name)


def family(pid: int) -> list[int]:
    """``pid`` and all its descendants (PostgreSQL's backends each make a
    session of their own, so its process group is not all of it)."""
    children: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def signal_family(pid: int, sig: int) -> None:
    for member in family(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, sig)
