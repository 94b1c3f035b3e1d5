"""Worksheet sessions in the frontend: they outlive websockets.

A ``Session`` holds its cells, a bounded replay buffer of every message it
sent (numbered by ``seq``) and its worker session. Browsers attach and detach
(``Connection``); on attach they get the cells and every buffered message
after the last ``seq`` they saw. When a worker is lost, running cells get a
notice and ``done(killed)``, and the next execution starts a fresh worker
session on a live worker.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import gevent
from gevent.lock import Semaphore
from gevent.queue import Queue

from web import blobs, wire

BUFFER_MESSAGES = 20000
WAIT_FOR_WORKER = 15.0  # seconds a new session waits for a live worker with room
BUFFER_BYTES = 32 << 20


class NoWorker(Exception):
    pass


class Connection:
    """One websocket: everything sent to it goes through one writer greenlet."""

    def __init__(self, ws):
        self.ws = ws
        self.outbox: Queue = Queue()
        self.closed = False
        self.writer = gevent.spawn(self._write)

    def send(self, message: dict) -> None:
        if not self.closed:
            self.outbox.put(wire.encode(message))

    def send_text(self, text: str) -> None:
        if not self.closed:
            self.outbox.put(text)

    def _write(self) -> None:
        while True:
            text = self.outbox.get()
            if text is None:
                return
            try:
                self.ws.send(text)
            except Exception:
                self.closed = True
                return

    def close(self) -> None:
        self.closed = True
        self.outbox.put(None)


@dataclass
class Quotas:
    per_browser: int = 5
    per_ip: int = 20
    linger: float = 600.0  # seconds a session waits for its browser to come back


class Session:
    def __init__(self, manager: SessionManager, browser: str, ip: str):
        self.id = secrets.token_urlsafe(12)
        self.manager = manager
        self.browser = browser
        self.ip = ip
        self.seq = 0
        self.buffer: deque[tuple[dict, str]] = deque()  # (message, its JSON)
        self.buffer_bytes = 0
        self.cells: dict[str, dict] = {}
        self.executions: dict[str, str] = {}  # execution id -> cell
        self.interact_runs: dict[str, str] = {}  # execution id -> interact it re-runs
        self.counter = itertools.count(1)
        self.link = None
        self.worker_session: str | None = None
        self.listeners: set[Connection] = set()
        self.detached_at: float | None = time.monotonic()
        self.starting = Semaphore()

    # -- messages to browsers

    def publish(self, message: dict) -> None:
        self.seq += 1
        message["seq"] = self.seq
        text = wire.encode(message)  # once: for the buffer and every listener
        self.buffer.append((message, text))
        self.buffer_bytes += len(text)
        while self.buffer and (len(self.buffer) > BUFFER_MESSAGES
                               or self.buffer_bytes > BUFFER_BYTES):
            self.buffer_bytes -= len(self.buffer.popleft()[1])
        for connection in list(self.listeners):
            connection.send_text(text)

    def attach(self, connection: Connection, last_seq: int) -> None:
        self.listeners.add(connection)
        self.detached_at = None
        first = self.buffer[0][0]["seq"] if self.buffer else self.seq + 1
        connection.send({"type": "attached", "session": self.id, "seq": self.seq,
                         "cells": [{"cell": cell, **state} for cell, state in
                                   self.cells.items()],
                         "complete": last_seq >= first - 1})
        for message, text in list(self.buffer):
            if message["seq"] > last_seq:
                connection.send_text(text)

    def detach(self, connection: Connection) -> None:
        self.listeners.discard(connection)
        if not self.listeners:
            self.detached_at = time.monotonic()

    # -- requests from browsers

    def execute(self, cell: str, code: str) -> None:
        execution = f"{cell}~{next(self.counter)}"
        self.cells[cell] = {"code": code, "execution": execution, "state": "queued"}
        self.executions[execution] = cell
        self.publish({"type": "queued", "cell": cell, "execution": execution})
        try:
            self._ensure_worker_session()
        except NoWorker as exc:
            self._finish(execution, "killed", str(exc))
            return
        # Only an error answers an execute (output arrives as session messages);
        # its request id leads such an error back here.
        self.link.send("execute", f"exec|{self.id}|{execution}",
                       session=self.worker_session, execution=execution, code=code)

    def interact(self, cell: str, interact_id: str, values: dict) -> None:
        """Re-run an interact's function with new control values."""
        execution = f"{cell}~{next(self.counter)}"
        self.executions[execution] = cell
        self.interact_runs[execution] = interact_id
        self.publish({"type": "interact_run", "cell": cell, "interact": interact_id,
                      "execution": execution})
        if not (self.worker_session and self.link and self.link.alive):
            self.publish({"type": "notice", "cell": cell, "execution": execution,
                          "interact": interact_id,
                          "text": "This interact's session has ended; run its cell again."})
            self.publish({"type": "done", "cell": cell, "execution": execution,
                          "interact": interact_id, "status": "killed"})
            return
        self.link.send("interact", f"exec|{self.id}|{execution}", session=self.worker_session,
                       execution=execution, interact=interact_id, values=values)

    def execute_refused(self, execution: str, message: dict) -> None:
        if message.get("code") == "no_such_session":
            self.worker_session = None
        self._finish(execution, "killed", f"The worker refused it: {message['message']}")

    def _ensure_worker_session(self) -> None:
        with self.starting:
            if self.worker_session and self.link and self.link.alive:
                return
            # Workers may still be loading their math stack (seconds after a
            # start): a cell waits a little for one rather than fail at once.
            deadline = time.monotonic() + WAIT_FOR_WORKER
            while True:
                for link in self.manager.pool.choose() if self.manager.pool else []:
                    try:
                        reply = link.request("start", timeout=10)
                    except gevent.Timeout:
                        continue
                    if reply.get("type") == "started":
                        self.link, self.worker_session = link, reply["session"]
                        self.manager.route[(link.name, reply["session"])] = self
                        return
                if time.monotonic() > deadline:
                    raise NoWorker("No compute worker can take a session right now; "
                                   "try again in a moment.")
                gevent.sleep(0.2)

    def interrupt(self) -> None:
        if self.worker_session and self.link:
            self.link.send("interrupt", session=self.worker_session)

    def restart(self) -> None:
        if self.worker_session and self.link:
            self.link.send("restart", session=self.worker_session)
            self.publish({"type": "session_status", "state": "restarted",
                          "reason": "restarted on request: variables are cleared"})

    def end(self) -> None:
        if self.worker_session and self.link:
            self.link.send("end", session=self.worker_session)
            self.manager.route.pop((self.link.name, self.worker_session), None)
        self.worker_session = None

    # -- from the worker

    def on_worker_message(self, message: dict, blob: bytes | None) -> None:
        kind = message["type"]
        if kind == "session_ended":
            self.manager.route.pop((self.link.name, self.worker_session), None)
            self.worker_session = None
            self._lose(f"The session ended ({message.get('reason')}); the next run starts "
                       "a fresh one.")
            return
        cell = self.executions.get(message.get("execution", ""))
        if cell is None:
            return
        out = {k: v for k, v in message.items() if k not in ("session", "seq", "re")}
        out["cell"] = cell
        if kind == "image":
            out["url"] = blobs.url(blobs.store(self.manager.db, blob, message["mime"]))
        execution = message["execution"]
        if execution in self.interact_runs:  # not the cell's own run
            out["interact"] = self.interact_runs[execution]
            if kind == "done":
                del self.interact_runs[execution]
            self.publish(out)
            return
        if kind == "done":
            self.cells[cell]["state"] = "done"
            self.cells[cell]["status"] = message["status"]
        elif self.cells[cell]["state"] == "queued":
            self.cells[cell]["state"] = "running"
        self.publish(out)

    def _finish(self, execution: str, status: str, notice: str) -> None:
        cell = self.executions.get(execution)
        if execution in self.interact_runs:
            interact_id = self.interact_runs.pop(execution)
            self.publish({"type": "notice", "cell": cell, "execution": execution,
                          "interact": interact_id, "text": notice})
            self.publish({"type": "done", "cell": cell, "execution": execution,
                          "interact": interact_id, "status": status})
            return
        if cell is None or self.cells[cell]["state"] == "done":
            return
        self.publish({"type": "notice", "cell": cell, "execution": execution, "text": notice})
        self.cells[cell].update(state="done", status=status)
        self.publish({"type": "done", "cell": cell, "execution": execution, "status": status})

    def _lose(self, why: str) -> None:
        """Every unfinished execution ends now, with a notice: never a spinner forever."""
        for state in self.cells.values():
            if state["state"] != "done":
                self._finish(state["execution"], "killed", why)
        for execution in list(self.interact_runs):
            self._finish(execution, "killed", why)
        self.publish({"type": "session_status", "state": "lost", "reason": why})

    def worker_lost(self, why: str) -> None:
        self.worker_session = None
        self._lose(f"The worker running this session stopped ({why}); your variables are "
                   "gone and the next run starts a fresh session.")


class SessionManager:
    def __init__(self, db, quotas: Quotas, say: Callable[[str], None]):
        self.db = db
        self.quotas = quotas
        self.say = say
        self.pool = None  # set by the app once the worker pool exists
        self.sessions: dict[str, Session] = {}
        self.route: dict[tuple[str, str], Session] = {}  # (worker, worker session) -> ours
        self.reaper = gevent.spawn(self._reap)

    def open(self, session_id: str | None, browser: str, ip: str) -> Session:
        if session_id and session_id in self.sessions:
            return self.sessions[session_id]
        mine = [s for s in self.sessions.values() if s.browser == browser]
        if len(mine) >= self.quotas.per_browser:
            raise wire.WireError("quota", f"this browser already has {len(mine)} sessions "
                                 f"(the limit is {self.quotas.per_browser}); close a tab")
        from_ip = [s for s in self.sessions.values() if s.ip == ip]
        if len(from_ip) >= self.quotas.per_ip:
            raise wire.WireError("quota", f"{len(from_ip)} sessions are open from your "
                                 f"address (the limit is {self.quotas.per_ip})")
        session = Session(self, browser, ip)
        self.sessions[session.id] = session
        return session

    def on_worker_message(self, link, message: dict, blob: bytes | None) -> None:
        if message.get("type") == "error" and "session" not in message:
            # A refused request (execution errors carry their session).
            _, _, rest = str(message.get("re") or "").partition("exec|")
            session_id, _, execution = rest.partition("|")
            if session_id in self.sessions:
                self.sessions[session_id].execute_refused(execution, message)
            return
        session = self.route.get((link.name, message.get("session")))
        if session is not None:
            try:
                session.on_worker_message(message, blob)
            except Exception as exc:  # one bad message must not stop the reader
                self.say(f"session {session.id}: could not relay a message: {exc!r}")

    def on_worker_lost(self, link, why: str) -> None:
        for (name, worker_session), session in list(self.route.items()):
            if name == link.name:
                del self.route[(name, worker_session)]
                session.worker_lost(why)

    def _reap(self) -> None:
        while True:
            gevent.sleep(5)
            now = time.monotonic()
            for session in list(self.sessions.values()):
                if session.detached_at and now - session.detached_at > self.quotas.linger:
                    session.end()
                    del self.sessions[session.id]
