"""Worksheet sessions in the frontend: they outlive websockets.

A ``Session`` holds its cells, a bounded log of every message it sent
(numbered by ``seq``) and its worker session. Browsers attach and detach
(``Connection``). A connection does not queue what a session publishes: its
writer pulls the next message from the session's log by ``seq`` when the
previous one is on the wire. So a browser that cannot keep up costs no
memory beyond the log; when the log has dropped what it still needs, it gets
a ``gap`` message saying how much, and goes on from the oldest message kept.

When a worker is lost, running cells get a notice and ``done(killed)``, and
the next execution starts a fresh worker session on a live worker.
"""

from __future__ import annotations

import contextlib
import itertools
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import gevent
from gevent.event import Event
from gevent.lock import Semaphore

from sage_worker.once import OncePerKind
from web import blobs, frames, wire
from web.browsers import BrowserTable
from web.bus import Bus
from web.db import DatabaseUnavailable
from web.workers import WorkerClient, WorkerLink, WorkerPool, WorkerUnavailable

LOG_MESSAGES = 20000
LOG_BYTES = 40 << 20  # a whole execution at the worker's default output cap fits
WAIT_FOR_WORKER = 15.0  # seconds a new session waits for a live worker with room
DIRECT_LIMIT = 64  # replies (attached, pong, errors) waiting for one websocket
BATCH_BYTES = 256 << 10  # what one write to a websocket carries at most
LEAVE_GRACE = 15.0  # seconds a session whose tab was closed waits for a reload
RESTART_EVERY = 1.0  # seconds between two restarts of one session
# Of the code before the cursor, what goes to the worker for a completion: the
# name being completed is at its end.
COMPLETION_CONTEXT = 4096


class NoWorker(Exception):
    pass


class Connection:
    """One websocket. Everything is written by one greenlet, started by ``start``:
    direct replies first, then the followed session's messages, in seq order."""

    def __init__(self, ws, browser: str = ""):
        self.id = secrets.token_urlsafe(12)  # its row in the browsers table
        self.ws = ws
        self.browser = browser
        self.direct: deque[str] = deque()
        self.session: Session | None = None
        self.next_seq = 1
        self.wake = Event()
        self.closed = False
        self.writer = None

    def start(self) -> None:
        self.writer = gevent.spawn(self._write)

    def send(self, message: dict) -> None:
        self.send_text(wire.encode(message))

    def send_text(self, text: str) -> None:
        if self.closed:
            return
        if len(self.direct) >= DIRECT_LIMIT:
            # A browser that sends requests and reads no answers: let it go.
            self.close()
            return
        self.direct.append(text)
        self.wake.set()

    def follow(self, session: Session | None, after_seq: int) -> None:
        self.session = session
        self.next_seq = after_seq + 1
        self.wake.set()

    def _next_text(self) -> str | None:
        if self.direct:
            return self.direct.popleft()
        session = self.session
        if session is None or self.next_seq > session.seq:
            return None
        first = session.first_seq()
        if self.next_seq < first:
            missed = first - self.next_seq
            self.next_seq = first
            return wire.encode({"type": "gap", "missed": missed,
                                "text": f"{missed} messages were dropped because this "
                                        "connection could not keep up"})
        text = session.text_at(self.next_seq)
        self.next_seq += 1
        return text

    def _write(self) -> None:
        while not self.closed:
            batch, size = [], 0
            while size < BATCH_BYTES and (text := self._next_text()) is not None:
                batch.append(text)
                size += len(text)
            if not batch:
                self.wake.clear()
                self.wake.wait()
                continue
            try:
                frames.send_texts(self.ws, batch)
            except Exception:
                self.closed = True
                return

    def close(self) -> None:
        self.closed = True
        self.wake.set()


@dataclass
class Quotas:
    # Sessions one browser (cookie) holds open at once.
    per_browser: int = 10
    # Sessions one IP address holds open at once: a class of 100 behind one
    # NAT, two tabs each. Detached sessions stop counting after LEAVE_GRACE.
    per_ip: int = 200
    linger: float = 600.0  # seconds a detached session waits for its browser to come back
    # All sessions' logs together on this frontend: beyond it the logs of
    # detached sessions go first (their pages reload their cells), then the
    # biggest ones (their browsers are told of the gap).
    logs_mb: int = 1024
    images_mb: int = 64  # images one session may store (each also counts as output)


class Session:
    def __init__(self, manager: SessionManager, browser: str, ip: str):
        self.id = secrets.token_urlsafe(12)
        self.manager = manager
        self.browser = browser
        self.ip = ip
        self.seq = 0
        self.log: deque[str] = deque()  # the texts of messages first_seq() .. seq
        self.log_bytes = 0
        self.cells: dict[str, dict] = {}
        self.executions: dict[str, str] = {}  # execution id -> cell
        self.interact_runs: dict[str, str] = {}  # execution id -> interact it re-runs
        self.counter = itertools.count(1)
        self.link: WorkerLink | None = None
        self.worker_session: str | None = None
        self.listeners: set[Connection] = set()
        self.detached_at: float | None = time.monotonic()
        self.left = False  # its page said it was closing
        self.restart_after = 0.0
        self.image_bytes = 0
        self.starting = Semaphore()
        # completion requests in flight: execution -> (connection, answer, code)
        self.completions: dict[str, tuple] = {}

    # -- messages to browsers

    def first_seq(self) -> int:
        return self.seq - len(self.log) + 1

    def text_at(self, seq: int) -> str:
        return self.log[seq - self.first_seq()]

    def publish(self, message: dict) -> None:
        self.seq += 1
        message["seq"] = self.seq
        text = wire.encode(message)  # once: for the log and every listener
        before = self.log_bytes
        self.log.append(text)
        self.log_bytes += len(text)
        while len(self.log) > 1 and (len(self.log) > LOG_MESSAGES
                                     or self.log_bytes > LOG_BYTES):
            self.log_bytes -= len(self.log.popleft())
        self.manager.logged(self.log_bytes - before)
        for connection in self.listeners:
            connection.wake.set()

    def drop_log(self) -> None:
        """Forget every message: a page attaching again rebuilds from the cells'
        state (attached says it is not complete); one attached now gets a gap."""
        self.manager.logged(-self.log_bytes)
        self.log.clear()
        self.log_bytes = 0

    def attach(self, connection: Connection, last_seq: int) -> None:
        self.listeners.add(connection)
        self.detached_at = None
        self.left = False
        last_seq = min(last_seq, self.seq)
        connection.send({"type": "attached", "session": self.id, "seq": self.seq,
                         "cells": [{"cell": cell, **state} for cell, state in
                                   self.cells.items()],
                         "complete": last_seq >= self.first_seq() - 1})
        connection.follow(self, last_seq)

    def detach(self, connection: Connection) -> None:
        self.listeners.discard(connection)
        if not self.listeners:
            self.detached_at = time.monotonic()

    def counts_toward_quota(self, now: float) -> bool:
        """Attached, or detached so recently that its page may come right back."""
        if self.detached_at is None:
            return True
        return not self.left and now - self.detached_at < LEAVE_GRACE

    # -- requests from browsers

    def execute(self, cell: str, code: str, options: dict | None = None) -> None:
        """``options``: the worksheet's typeset and language switches."""
        execution = self._next_execution()
        self.cells[cell] = {"code": code, "execution": execution, "state": "queued"}
        self.executions[execution] = cell
        self.publish({"type": "queued", "cell": cell, "execution": execution})
        try:
            self._ensure_worker_session()
            # Only an error answers an execute (output arrives as session
            # messages); its request id leads such an error back here.
            self.link.send("execute", f"{self.id}|{execution}",
                           session=self.worker_session, execution=execution, code=code,
                           **(options or {}))
        except (NoWorker, WorkerUnavailable) as exc:
            self._finish(execution, "killed", str(exc))

    def interact(self, cell: str, interact_id: str, values: dict) -> None:
        """Re-run an interact's function with new control values."""
        execution = self._next_execution()
        self.executions[execution] = cell
        self.interact_runs[execution] = interact_id
        self.publish({"type": "interact_run", "cell": cell, "interact": interact_id,
                      "execution": execution})
        if not (self.worker_session and self.link and self.link.alive):
            self._finish(execution, "killed",
                         "This interact's session has ended; run its cell again.")
            return
        try:
            self.link.send("interact", f"{self.id}|{execution}",
                           session=self.worker_session, execution=execution,
                           interact=interact_id, values=values)
        except WorkerUnavailable as exc:
            self._finish(execution, "killed", str(exc))

    def complete(self, connection: Connection, cell: str, before_cursor: str) -> None:
        """Names completing the one before the cursor, for the page that asked
        (never into the log: no other page wants them). No session yet, or a
        busy one: no names."""
        answer = {"type": "completions", "cell": cell, "prefix": "", "matches": []}
        code = before_cursor[-COMPLETION_CONTEXT:]
        if not (self.worker_session and self.link and self.link.alive):
            connection.send(answer)
            return
        execution = self._next_execution()
        self.completions[execution] = (connection, answer, code)
        try:
            self.link.send("complete", f"{self.id}|{execution}", session=self.worker_session,
                           execution=execution, code=code, cursor=len(code))
        except WorkerUnavailable:
            self._answer_completion(execution)

    def _answer_completion(self, execution: str, matches: list[str] | None = None,
                           start: int = 0, end: int = 0) -> None:
        pending = self.completions.pop(execution, None)
        if pending is None:
            return
        connection, answer, code = pending
        if matches:
            answer.update(matches=matches, prefix=code[start:end])
        connection.send(answer)

    def _next_execution(self) -> str:
        """A short id (the worker takes ids of at most 64 characters, and the
        request that carries it adds the session's): the cell is mapped here."""
        return f"e{next(self.counter)}"

    def execute_refused(self, execution: str, message: dict) -> None:
        if execution in self.completions:  # busy: no names this time
            self._answer_completion(execution)
            return
        if message.get("code") == "no_such_session":
            self.worker_session = None
        self._finish(execution, "killed", f"The worker refused it: {message['message']}")

    def _ensure_worker_session(self) -> None:
        with self.starting:
            if self.worker_session and self.link and self.link.alive:
                return
            self.worker_session = None
            self.link, self.worker_session = self.manager.start_worker_session(self)

    def interrupt(self) -> None:
        if self.worker_session and self.link:
            self._quietly("interrupt", session=self.worker_session)

    def restart(self) -> None:
        now = time.monotonic()
        if self.worker_session and self.link and now >= self.restart_after:
            self.restart_after = now + RESTART_EVERY  # a burst of them is one restart
            self._quietly("restart", session=self.worker_session)
            self.publish({"type": "session_status", "state": "restarted",
                          "reason": "restarted on request: variables are cleared"})

    def end(self) -> None:
        if self.worker_session and self.link:
            self._quietly("end", session=self.worker_session)
            self.manager.route.pop((self.link.name, self.worker_session), None)
        self.worker_session = None

    def _quietly(self, kind: str, **fields) -> None:
        # A worker that is not reading gets the claim later, which ends what we drop.
        with contextlib.suppress(WorkerUnavailable):
            self.link.send(kind, **fields)

    # -- from the worker

    def on_worker_message(self, message: dict, blob: bytes | None) -> None:
        kind = message["type"]
        if kind == "session_ended":
            if self.link:
                self.manager.route.pop((self.link.name, self.worker_session), None)
            self.worker_session = None
            self._lose(f"The session ended ({message.get('reason')}); the next run starts "
                       "a fresh one.")
            return
        if message.get("execution") in self.completions:
            if kind == "completions":
                self._answer_completion(message["execution"], message["matches"],
                                        message["start"], message["end"])
            elif kind == "done":
                self._answer_completion(message["execution"])
            return
        cell = self.executions.get(message.get("execution", ""))
        if cell is None:
            return
        out = {k: v for k, v in message.items() if k not in ("session", "seq", "re")}
        out["cell"] = cell
        if kind == "image":
            refusal = self._store_image(out, blob, message["mime"])
            if refusal:
                out = {"type": "notice", "cell": cell, "execution": message["execution"],
                       "text": refusal}
                if "interact" in message:
                    out["interact"] = message["interact"]
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

    def _store_image(self, out: dict, blob: bytes, mime: str) -> str | None:
        """Store an image and set its URL; or why it was not stored."""
        limit = self.manager.quotas.images_mb << 20
        if self.image_bytes + len(blob) > limit:
            return (f"An image was not stored: this session's images reached "
                    f"{self.manager.quotas.images_mb} MB. Restart it to store more.")
        try:
            out["url"] = blobs.url(blobs.store(self.manager.db, blob, mime))
        except DatabaseUnavailable:
            return ("An image could not be stored (the database is unavailable right "
                    "now); run the cell again to see it.")
        except ValueError as exc:
            return f"An image was not stored: {exc}."
        self.image_bytes += len(blob)
        return None

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
        for execution in list(self.completions):
            self._answer_completion(execution)
        self.publish({"type": "session_status", "state": "lost", "reason": why})

    def give_up_place(self) -> None:
        """End the worker session while no page is attached: others need room."""
        self.end()
        self._lose("This session was closed while its page was away, to make room for "
                   "others; the next run starts a fresh session.")

    def worker_lost(self, why: str) -> None:
        self.worker_session = None
        self._lose(f"The worker running this session stopped ({why}); your variables are "
                   "gone and the next run starts a fresh session.")


class SessionManager:
    def __init__(self, db, quotas: Quotas, say: Callable[[str], None]):
        self.db = db
        self.quotas = quotas
        self.say = say
        self.pool: WorkerPool | None = None
        self.sessions: dict[str, Session] = {}
        self.route: dict[tuple[str, str], object] = {}  # (worker, its session) -> ours
        self.reaper = None
        self.log_bytes = 0  # all sessions' logs together
        self.problem = OncePerKind(say)  # faults of ours, logged once per kind
        self.connections: dict[str, Connection] = {}  # open websockets, by id
        self.table: BrowserTable | None = None  # where they are, for everyone to see
        self.bus: Bus | None = None  # the other frontends

    def client(self, name: str, key) -> WorkerClient:
        """Who this frontend is to its workers; their messages come back here."""
        return WorkerClient(name, key, self.on_worker_message, self.on_worker_lost,
                            self.held_on)

    def start(self) -> None:
        if self.pool is not None:
            self.pool.start()
        if self.table is not None:
            self.table.start()
        if self.bus is not None:
            self.bus.start()
        self.reaper = gevent.spawn(self._reap)

    def stopped(self) -> None:
        """The server stopped (SIGTERM): our rows leave the browsers table now
        (the registry listener would clear them too, a little later)."""
        for connection in list(self.connections.values()):
            self.disconnected(connection)
        if self.table is not None:
            with contextlib.suppress(Exception), gevent.Timeout(3):
                self.table.sync()
        if self.bus is not None:
            self.bus.close()

    # -- websockets

    def connected(self, connection: Connection) -> None:
        self.connections[connection.id] = connection
        if self.table is not None:
            self.table.connected(connection.id, connection.browser)

    def following(self, connection: Connection, session: Session) -> None:
        if self.table is not None:
            self.table.followed(connection.id, session.id)

    def disconnected(self, connection: Connection) -> None:
        self.connections.pop(connection.id, None)
        if self.table is not None:
            self.table.closed(connection.id)

    def deliver(self, message: dict) -> int:
        """Show a bus message (web/bus.py) on the pages here it is meant for;
        how many got it. Until accounts exist, a browser is its own account."""
        to, target = message["to"], message["target"]
        shown = {"type": "announcement", "id": message["id"], "text": message["text"],
                 "from": message["sender"]}
        count = 0
        for connection in list(self.connections.values()):
            if to == "all" or (to in ("browser", "account") and connection.browser == target) \
                    or (to == "session" and connection.session is not None
                        and connection.session.id == target):
                connection.send(shown)
                count += 1
        return count

    # -- sessions of browsers

    def open(self, session_id: str | None, browser: str, ip: str) -> Session:
        known = self.sessions.get(session_id) if session_id else None
        if known is not None and known.browser == browser:
            return known  # another browser that learned the id gets a session of its own
        self._make_room(lambda s: s.browser == browser, self.quotas.per_browser,
                        f"this browser already has {{n}} sessions (the limit is "
                        f"{self.quotas.per_browser}); close a tab")
        self._make_room(lambda s: s.ip == ip, self.quotas.per_ip,
                        f"{{n}} sessions are open from your address (the limit is "
                        f"{self.quotas.per_ip}); close a tab or try again later")
        session = Session(self, browser, ip)
        self.sessions[session.id] = session
        return session

    def _make_room(self, mine: Callable[[Session], bool], limit: int, refusal: str) -> None:
        """Within ``limit``, or ending detached sessions (oldest first) gets there;
        else a quota error. Sessions whose page left wait for nobody."""
        now = time.monotonic()
        held = [s for s in self.sessions.values() if mine(s)]
        counted = [s for s in held if s.counts_toward_quota(now)]
        if len(counted) >= limit:
            raise wire.WireError("quota", refusal.format(n=len(counted)))
        detached = sorted((s for s in held if s.detached_at is not None),
                          key=lambda s: s.detached_at)
        for session in detached[:max(len(held) - limit + 1, 0)]:
            self.close(session)

    def close(self, session: Session) -> None:
        session.end()
        session.drop_log()
        self.sessions.pop(session.id, None)

    def detached_count(self) -> int:
        """Sessions no page is attached to (they wait for it for ``linger``)."""
        return sum(1 for s in self.sessions.values() if s.detached_at is not None)

    def logged(self, delta: int) -> None:
        self.log_bytes += delta
        if self.log_bytes > self.quotas.logs_mb << 20:
            self._trim_logs()

    def _trim_logs(self) -> None:
        """Under the budget again, with room to spare: detached sessions' logs
        first (the longest detached first), then the biggest attached ones."""
        goal = (self.quotas.logs_mb << 20) * 9 // 10
        detached = sorted((s for s in self.sessions.values() if s.detached_at is not None),
                          key=lambda s: s.detached_at)
        attached = sorted((s for s in self.sessions.values() if s.detached_at is None),
                          key=lambda s: -s.log_bytes)
        for session in [*detached, *attached]:
            if self.log_bytes <= goal:
                return
            session.drop_log()

    def start_worker_session(self, owner, engine: str | None = None,
                             wait: float = WAIT_FOR_WORKER) -> tuple[WorkerLink, str]:
        """A worker session for ``owner`` (a Session or an API collector) on the
        least loaded live worker; waits a little for workers still loading.
        When every worker is full, a session whose browser went away gives
        its worker session up first (it starts a fresh one when it is back):
        one for each session waiting, so a burst of new pages is served at
        once, and never more."""
        deadline = time.monotonic() + wait
        released = False
        while True:
            if not released and self.pool and self.pool.links and not self.pool.choose(engine):
                released = self._release_an_absent_session()
            for link in self.pool.choose(engine) if self.pool else []:
                try:
                    reply = link.request("start", timeout=10)
                except (gevent.Timeout, WorkerUnavailable):
                    continue
                if reply.get("type") == "started":
                    self.route[(link.name, reply["session"])] = owner
                    return link, reply["session"]
                if reply.get("code") == "isolation_failed":
                    self.say(f"{link.name}: {reply.get('message')}")
            if time.monotonic() > deadline:
                raise NoWorker("No compute worker can take a session right now; "
                               "try again in a moment.")
            gevent.sleep(0.2)

    def _release_an_absent_session(self) -> bool:
        absent = [s for s in self.sessions.values()
                  if s.detached_at is not None and s.worker_session]
        if not absent:
            return False
        min(absent, key=lambda s: s.detached_at).give_up_place()
        return True

    # -- from workers

    def on_worker_message(self, link: WorkerLink, message: dict, blob: bytes | None) -> None:
        if message["type"] == "error" and "session" not in message:
            # A refused request (execution errors carry their session).
            session_id, _, execution = str(message.get("re") or "").partition("|")
            if session_id in self.sessions:
                self.sessions[session_id].execute_refused(execution, message)
            return
        owner = self.route.get((link.name, message.get("session")))
        if owner is not None:
            owner.on_worker_message(message, blob)

    def on_worker_lost(self, link: WorkerLink, why: str) -> None:
        for (name, worker_session), owner in list(self.route.items()):
            if name == link.name:
                del self.route[(name, worker_session)]
                owner.worker_lost(why)

    def held_on(self, link: WorkerLink) -> list[str]:
        return [worker_session for name, worker_session in self.route if name == link.name]

    def _reap(self) -> None:
        while True:
            gevent.sleep(1)
            now = time.monotonic()
            for session in list(self.sessions.values()):
                if session.detached_at is None:
                    continue
                waited = now - session.detached_at
                if waited > self.quotas.linger or (session.left and waited > LEAVE_GRACE):
                    self.close(session)
