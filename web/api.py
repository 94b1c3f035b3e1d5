"""``POST /api/execute``: run code in a fresh short-lived session, answer JSON.

    curl -s http://127.0.0.1:8080/api/execute --data-urlencode code='factor(2^64+1)'
    curl -s http://127.0.0.1:8080/api/execute -H 'Content-Type: application/json' \\
         -d '{"code": "print(1+1)", "engine": "python", "timeout": 10}'

Answer: {"status": ok|error|interrupted|timeout|limit|killed, "stdout", "stderr",
"result": {mime: text} or null, "images": [{"url", "mime", "sha1"}],
"error": {"ename", "evalue", "traceback"} or null, "notices": [...]}.
"""

from __future__ import annotations

from dataclasses import dataclass

import gevent
from gevent.event import Event

from web import blobs

GRACE = 5.0  # seconds an interrupted execution gets before the session is ended


@dataclass(frozen=True)
class ApiLimits:
    max_code: int = 64 << 10  # characters
    max_timeout: float = 30.0  # seconds
    max_output: int = 1 << 20  # characters of stdout + stderr kept in the answer


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


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
            sha1 = blobs.store(self.db, blob, message["mime"])
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
    engine = body.get("engine") or None
    if engine not in (None, "sage", "python"):
        raise ApiError(400, "'engine' must be 'sage' or 'python'")
    try:
        timeout = float(body.get("timeout", limits.max_timeout))
    except (TypeError, ValueError):
        raise ApiError(400, "'timeout' must be a number of seconds") from None
    if not 0 < timeout <= limits.max_timeout:
        raise ApiError(400, f"'timeout' must be more than 0 and at most {limits.max_timeout}")
    return code, engine, timeout


def execute(manager, code: str, engine: str | None, timeout: float,
            limits: ApiLimits) -> dict:
    links = manager.pool.choose(engine) if manager.pool else []
    for link in links:
        try:
            reply = link.request("start", timeout=10)
        except gevent.Timeout:
            continue
        if reply.get("type") == "started":
            break
    else:
        what = f"a {engine} worker" if engine else "a compute worker"
        raise ApiError(503, f"no {what} can take a session right now; try again later")
    session = reply["session"]
    collector = Collector(manager.db, limits.max_output)
    manager.route[(link.name, session)] = collector
    try:
        link.send("execute", session=session, execution="api", code=code)
        if not collector.done.wait(timeout):
            link.send("interrupt", session=session)
            collector.answer["notices"].append(f"stopped after the {timeout:g} s time limit")
            collector.done.wait(GRACE)
            collector.answer["status"] = "timeout"
        return collector.answer
    finally:
        manager.route.pop((link.name, session), None)
        link.send("end", session=session)
