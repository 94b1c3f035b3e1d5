"""``POST /api/execute``: run code in a fresh short-lived session, answer JSON.

    curl -s http://127.0.0.1:8080/api/execute --data-urlencode code='factor(2^64+1)'
    curl -s http://127.0.0.1:8080/api/execute -H 'Content-Type: application/json' \\
         -d '{"code": "print(1+1)", "engine": "python", "timeout": 10}'

Answer: {"status": ok|error|interrupted|timeout|limit|killed, "stdout", "stderr",
"result": {mime: text} or null, "images": [{"url", "mime", "sha1"}],
"error": {"ename", "evalue", "traceback"} or null, "notices": [...]}.

Quotas (from the config): requests per IP and in all (a rate, kept by
Flask-Limiter in memcached, see web/__init__.py), and executions running at
once on this frontend, in all and per IP (``Slots``): API callers never take
more than their share of the workers, so they cannot starve the worksheets.
Beyond a quota: 429 with ``Retry-After`` and a one-line JSON error.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass

from gevent.event import Event

from web import blobs
from web.db import DatabaseUnavailable
from web.sessions import NoWorker
from web.workers import WorkerUnavailable

GRACE = 5.0  # seconds an interrupted execution gets before the session is ended


@dataclass(frozen=True)
class ApiLimits:
    max_code: int = 64 << 10  # characters
    max_timeout: float = 30.0  # seconds
    max_output: int = 1 << 20  # characters of stdout + stderr kept in the answer
    concurrent: int = 8  # executions at once on one frontend, from all callers
    concurrent_per_ip: int = 2  # executions at once from one IP address
    rate_per_ip: str = "60/minute"  # requests from one IP address (all frontends)
    rate_total: str = "1200/minute"  # requests from everyone (all frontends)


# Seconds a caller over the concurrency limits waits. Not 1: flask-limiter
# rewrites Retry-After as a whole number of seconds from now, and 1 second
# from a moment already begun truncates to 0 ("come back now").
BUSY_RETRY_AFTER = 2


class ApiError(Exception):
    def __init__(self, status: int, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


class Slots:
    """Executions running at once on this frontend, in all and per IP.
    (gevent runs one greenlet at a time: plain counters are exact.)"""

    def __init__(self):
        self.total = 0
        self.by_ip: Counter[str] = Counter()

    @contextlib.contextmanager
    def take(self, ip: str, limits: ApiLimits):
        if self.total >= limits.concurrent:
            raise ApiError(429, f"{self.total} API executions are running on this server "
                           f"(the limit is {limits.concurrent}); try again in a moment",
                           BUSY_RETRY_AFTER)
        if self.by_ip[ip] >= limits.concurrent_per_ip:
            raise ApiError(429, f"{self.by_ip[ip]} of your API executions are running (the "
                           f"limit is {limits.concurrent_per_ip}); wait for them",
                           BUSY_RETRY_AFTER)
        self.total += 1
        self.by_ip[ip] += 1
        try:
            yield
        finally:
            self.total -= 1
            self.by_ip[ip] -= 1
            if not self.by_ip[ip]:
                del self.by_ip[ip]


class Collector:
    """Stands where a worksheet session would in the manager's routing table."""

    def __init__(self, db, max_output: int):
        self.db = db
        self.max_output = max_output
        self.answer = {"status": None, "stdout": "", "stderr": "", "result": None,
                       "images": [], "error": None, "notices": []}
        self.kept = 0
        self.done = Event()

    def on_worker_message(self, message: dict, blob: bytes | None) -> None:
        kind = message["type"]
        if kind == "stream":
            room = max(self.max_output - self.kept, 0)
            text = message["text"][:room]
            self.kept += len(text)
            self.answer[message["name"]] += text
            if len(message["text"]) > room and not self.answer.get("truncated"):
                self.answer["truncated"] = True
                self.answer["notices"].append(
                    f"output beyond {self.max_output} characters was left out")
        elif kind == "result":
            self.answer["result"] = message["data"]
        elif kind == "image":
            try:
                sha1 = blobs.store(self.db, blob, message["mime"])
            except DatabaseUnavailable:
                self.answer["notices"].append("an image was left out: the database is "
                                              "unavailable right now")
                return
            except ValueError as exc:
                self.answer["notices"].append(f"an image was left out: {exc}")
                return
            self.answer["images"].append({"url": blobs.url(sha1), "mime": message["mime"],
                                          "sha1": sha1})
        elif kind == "error":
            self.answer["error"] = {k: message[k] for k in ("ename", "evalue", "traceback")}
        elif kind == "notice":
            self.answer["notices"].append(message["text"])
        elif kind == "done":
            self.answer["status"] = message["status"]
            self.done.set()
        elif kind == "session_ended" and not self.done.is_set():
            self.worker_lost(f"the session ended ({message.get('reason')})")

    def worker_lost(self, why: str) -> None:
        if not self.done.is_set():
            self.answer["notices"].append(f"The worker stopped: {why}.")
            self.answer["status"] = "killed"
            self.done.set()


def parse(body: dict, limits: ApiLimits) -> tuple[str, str | None, float]:
    code = body.get("code")
    if not isinstance(code, str) or not code.strip():
        raise ApiError(400, "give the code to run as 'code' (JSON or form field)")
    if len(code) > limits.max_code:
        raise ApiError(413, f"code of {len(code)} characters; the limit is {limits.max_code}")
    engine = body.get("engine")
    if engine not in (None, "sage", "python"):
        raise ApiError(400, "'engine' must be 'sage' or 'python'")
    timeout = body.get("timeout", limits.max_timeout)
    try:
        if isinstance(timeout, bool):
            raise ValueError
        timeout = float(timeout)
    except (TypeError, ValueError, OverflowError):
        raise ApiError(400, "'timeout' must be a number of seconds") from None
    if not 0 < timeout <= limits.max_timeout:
        raise ApiError(400, f"'timeout' must be more than 0 and at most {limits.max_timeout}")
    return code, engine, timeout


def execute(manager, code: str, engine: str | None, timeout: float,
            limits: ApiLimits) -> dict:
    collector = Collector(manager.db, limits.max_output)
    try:
        link, session = manager.start_worker_session(collector, engine, wait=0)
    except NoWorker:
        what = f"{engine} worker" if engine else "compute worker"
        raise ApiError(503, f"no {what} can take a session right now; try again later",
                       5) from None
    try:
        link.send("execute", session=session, execution="api", code=code)
        if not collector.done.wait(timeout):
            link.send("interrupt", session=session)
            collector.answer["notices"].append(f"stopped after the {timeout:g} s time limit")
            collector.done.wait(GRACE)
            collector.answer["status"] = "timeout"
        return collector.answer
    except WorkerUnavailable:
        collector.worker_lost("it is not taking requests")
        return collector.answer
    finally:
        manager.route.pop((link.name, session), None)
        with contextlib.suppress(WorkerUnavailable):
            link.send("end", session=session)
