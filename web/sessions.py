"""Worksheet sessions as a frontend sees them: views of sessions that live
in the workers.

A session belongs to its worker, which numbers its messages (``seq``) and
keeps them and its cells (sage_worker/sessionlog.py). Any frontend serves
any session: a page that comes back, here or on another frontend, sends
``open(session, last_seq)`` and the frontend finds the session on a worker,
subscribes to its messages (ZeroMQ PUB/SUB, the session as topic) and takes
what it missed from the worker's log. A ``Session`` here keeps the messages
in order, exactly once, in a bounded cache its pages read from.

Browsers attach and detach (``Connection``). A connection does not queue
what a session publishes: its writer pulls the next message from the cache
by ``seq`` when the previous one is on the wire. So a browser that cannot
keep up costs no memory beyond the cache; when neither the cache nor the
worker's log holds what it needs, it gets a ``gap`` message saying how much.

When a worker is lost, running cells get a notice and ``done(killed)``, and
the next execution starts the session afresh (same id, numbering going on)
on a live worker.
"""

from __future__ import annotations

import contextlib
import itertools
import secrets
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

import gevent
from gevent.event import Event
from gevent.lock import Semaphore

from sage_worker import protocol
from sage_worker.once import OncePerKind
from web import blobs, frames, wire
from web.browsers import BrowserTable
from web.bus import Bus
from web.db import DatabaseUnavailable
from web.session_table import SessionTable
from web.workers import WorkerClient, WorkerLink, WorkerPool, WorkerUnavailable

LOG_MESSAGES = 20000
LOG_BYTES = 40 << 20  # a whole execution at the worker's default output cap fits
WAIT_FOR_WORKER = 15.0  # seconds a new session waits for a live worker with room
DIRECT_LIMIT = 64  # replies (attached, pong, errors) waiting for one websocket
BATCH_BYTES = 256 << 10  # what one write to a websocket carries at most
LEAVE_GRACE = 15.0  # seconds a session whose tab was closed waits for a reload
# Seconds a view no page here follows is kept (a reload comes back within
# it) before this frontend stops watching the session; its worker keeps it
# for the linger time, and may end it sooner to make room.
VIEW_GRACE = 2.0
FIND_AGAIN_FOR = 300.0  # seconds a lost session's pages wait for it to run again elsewhere
GAP_WAIT = 0.05  # seconds a missing message may take to arrive before replay asks for it
MAX_PENDING = 20000  # messages that arrived early, held until the missing ones come
MAX_REFUSALS = 10000  # requests whose refusal is still expected
_request_ids = itertools.count(1)
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
        self.refetching = 0  # the seq we last asked the worker's log for
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
        while session is not None and self.next_seq <= session.seq:
            first = session.first_seq()
            if self.next_seq < first and session.live and self.refetching != self.next_seq:
                # The cache no longer reaches back; the worker's log may.
                self.refetching = self.next_seq
                gevent.spawn(session.refetch, self.next_seq - 1)
                return None
            if self.next_seq < first:
                missed = first - self.next_seq
                self.next_seq = first
                return wire.encode(wire.gap(missed))
            text = session.text_at(self.next_seq)
            self.next_seq += 1
            if text is not None:  # (a message the page needs nothing of)
                return text
        return None

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
    # All sessions' logs together on this frontend: beyond it the logs of
    # detached sessions go first (their pages reload their cells), then the
    # biggest ones (their browsers are told of the gap).
    logs_mb: int = 1024
    images_mb: int = 64  # images one session may store (each also counts as output)


class Session:
    """A frontend's view of one worksheet session. The session itself lives in
    a worker (its log, its cells); any frontend can serve it. The view keeps
    the messages in ``seq`` order (the worker's numbers), exactly once: what
    arrives early waits, what arrives twice is dropped, and what never came
    is fetched from the worker's log (``replay``). Its log is a cache that
    can always be filled again from the worker's."""

    def __init__(self, manager: SessionManager, browser: str, ip: str,
                 session_id: str | None = None):
        self.id = session_id or uuid.uuid4().hex  # the same on every worker it lives on
        self.manager = manager
        self.browser = browser
        self.ip = ip
        self.seq = 0  # the last worker message taken, in order
        self.log: deque[str | None] = deque()  # texts first_seq() .. seq (None: nothing)
        self.log_bytes = 0
        self.pending: dict[int, tuple[dict, bytes | None]] = {}  # arrived early
        self.mark = 0  # the newest seq the worker said it has (its "watched" mark)
        self.taking = False  # a message is being taken (storing an image waits)
        self.repairing = False
        self.cells: dict[str, dict] = {}  # each cell's latest run, as the worker keeps them
        self.layout: list[dict] | None = None  # the worksheet as its page arranged it
        self.link: WorkerLink | None = None
        self.live = False  # a worker runs it (on ``link``)
        self.listeners: set[Connection] = set()
        self.detached_at: float | None = time.monotonic()
        self.left = False  # its page said it was closing
        self.restart_after = 0.0
        self.image_bytes = 0
        self.starting = Semaphore()
        # completion requests in flight: execution -> (connection, answer, code)
        self.completions: dict[str, tuple] = {}
        self.end_reason: str | None = None  # why a worker ended it (adopt found out)
        self.unanswered: list[str] = []  # live workers the last adopt got no answer from

    # -- messages to browsers

    def first_seq(self) -> int:
        return self.seq - len(self.log) + 1

    def text_at(self, seq: int) -> str | None:
        return self.log[seq - self.first_seq()]

    def _keep(self, text: str | None) -> None:
        """The text of message ``seq`` (just taken), for every listener."""
        before = self.log_bytes
        self.log.append(text)
        self.log_bytes += len(text or "")
        while len(self.log) > 1 and (len(self.log) > LOG_MESSAGES
                                     or self.log_bytes > LOG_BYTES):
            self.log_bytes -= len(self.log.popleft() or "")
        self.manager.logged(self.log_bytes - before)
        for connection in self.listeners:
            connection.wake.set()

    def drop_log(self) -> None:
        """Forget the cached messages (the worker still has them: a page that
        needs them again gets them from there)."""
        self.manager.logged(-self.log_bytes)
        self.log.clear()
        self.log_bytes = 0

    def _direct(self, message: dict) -> None:
        """What this frontend says itself (no seq, not in any log): to the pages here."""
        for connection in self.listeners:
            connection.send(message)

    def attach(self, connection: Connection, last_seq: int) -> None:
        self.listeners.add(connection)
        self.detached_at = None
        self.left = False
        last_seq = min(last_seq, self.seq)
        if last_seq < self.first_seq() - 1 and self.live:
            self.refetch(last_seq)  # the cache does not reach back: the worker's log does
        connection.send(wire.attached(
            self.id, self.seq, [{"cell": cell, **state} for cell, state in self.cells.items()],
            last_seq >= self.first_seq() - 1, self.manager.frontends(), self.layout))
        if self.end_reason:  # the one the page asked for ended while it was away
            connection.send(wire.session_status("lost", ENDED.get(self.end_reason,
                                                                  ENDED[None])))
            self.end_reason = None
        connection.follow(self, last_seq)

    def summary(self, now: float) -> dict:
        """What a page over the limit shows of this session to its owner."""
        first = next((state.get("code") or "" for state in self.cells.values()), "")
        return {"session": self.id, "cells": len(self.layout or self.cells),
                "first": first[:80], "attached": self.detached_at is None,
                "idle": round(now - (self.detached_at or now))}

    def detach(self, connection: Connection) -> None:
        self.listeners.discard(connection)
        if not self.listeners:
            self.detached_at = time.monotonic()

    def counts_toward_quota(self, now: float) -> bool:
        """Attached, or detached so recently that its page may come right back."""
        if self.detached_at is None:
            return True
        return not self.left and now - self.detached_at < LEAVE_GRACE

    # -- finding it on a worker

    def adopt(self, after: int) -> bool:
        """Find this session on a live worker (a page that comes back, here or
        from another frontend): watch it, take its messages after ``after``
        and its cells. False if no worker has it, or it is not this browser's;
        ``end_reason`` then says why, when a worker remembers it ended."""
        self.end_reason = None
        self.unanswered = []
        for link in self.manager.pool.live() if self.manager.pool else []:
            if self._take_over(link, after):
                return True
        return False

    def _take_over(self, link: WorkerLink, after: int) -> bool:
        self.manager.route[(link.name, self.id)] = self
        link.watch(self.id)
        self.seq, self.link = after, link
        asked = time.monotonic()
        try:
            reply = link.request("replay", session=self.id, after=after)
        except (gevent.Timeout, WorkerUnavailable):
            reply = {}
            if link.last_pong > asked:  # it answers pings, not this: busy, not gone
                self.unanswered.append(link.name)
        if reply.get("type") == "replayed" and reply.get("owner") in ("", self.browser):
            self.live = True
            self._replayed(reply)
            self._record("running")
            self._catch_up()
            return True
        if reply.get("code") == "ended":
            self.end_reason = reply.get("message")
        self.manager.route.pop((link.name, self.id), None)
        link.unwatch(self.id)
        self.link, self.live = None, False
        self.drop_log()
        self.pending.clear()
        return False

    def refetch(self, after: int) -> None:
        """Fill the cache again from the worker's log, from ``after`` on."""
        self.drop_log()
        self.pending.clear()
        self.seq = after
        self._repair()

    def _replayed(self, reply: dict) -> None:
        if isinstance(reply.get("layout"), list):  # checked by the worker when it came
            self.layout = reply["layout"]
        cells = reply.get("cells")
        if isinstance(cells, list):
            self.cells = {c["cell"]: {k: c.get(k) for k in ("code", "execution", "state",
                                                            "status") if k in c}
                          for c in cells if isinstance(c, dict) and isinstance(c.get("cell"), str)}
        first = reply.get("first")
        if isinstance(first, int) and first > self.seq + 1:
            # The worker's log no longer holds them either: pages behind get a gap.
            self.drop_log()
            self.seq = first - 1
        self._take_pending()

    # -- the worker's messages, in order and once

    def on_worker_message(self, message: dict, blob: bytes | None) -> None:
        if message.get("execution") in self.completions:
            kind = message["type"]
            if kind == "completions":
                self._answer_completion(message["execution"], message["matches"],
                                        message["start"], message["end"])
            elif kind == "done":
                self._answer_completion(message["execution"])
            return
        seq = message.get("seq")
        if message["type"] == "watched":
            # Our subscription works from here on; what came before is in the log.
            if type(seq) is int:
                self.mark = max(self.mark, seq)
                self._catch_up()
            return
        if type(seq) is not int or seq <= self.seq or seq in self.pending:
            return  # seen (it came both as the asker's and as a watcher's)
        if len(self.pending) < MAX_PENDING:
            self.pending[seq] = (message, blob)
        self._take_pending()
        if self.pending and min(self.pending) > self.seq + 1 and not self.repairing:
            self.repairing = True
            # Over two sockets, order is not kept: what is missing is usually
            # on its way. Only then ask the worker.
            gevent.spawn_later(GAP_WAIT, self._repair)

    def _catch_up(self) -> None:
        """Behind the worker's mark: ask its log (once we know where it runs;
        the mark may come before the answer that says so)."""
        if self.mark > self.seq and self.live and not self.repairing:
            self.repairing = True
            gevent.spawn(self._repair)

    def _take_pending(self) -> None:
        """Take what is next, in order. One greenlet at a time: storing an
        image waits for the database, and what arrives meanwhile waits here."""
        if self.taking:
            return
        self.taking = True
        try:
            while self.seq + 1 in self.pending:
                self._take(*self.pending.pop(self.seq + 1))
            for stale in [s for s in self.pending if s <= self.seq]:
                del self.pending[stale]
        finally:
            self.taking = False

    def _repair(self) -> None:
        """Ask the worker for what never came (replay); its messages arrive
        through on_worker_message, its answer says where its log starts."""
        try:
            if not (self.live and self.link):
                return
            wanted = self.seq
            try:
                reply = self.link.request("replay", session=self.id, after=wanted)
            except (gevent.Timeout, WorkerUnavailable):
                return
            if reply.get("type") == "replayed" and self.seq == wanted:
                self._replayed(reply)
            elif reply.get("type") == "replayed":
                self._take_pending()
        finally:
            self.repairing = False
            if self.pending and min(self.pending) > self.seq + 1 and self.live:
                self.repairing = True
                gevent.spawn_later(GAP_WAIT, self._repair)
            else:
                self._catch_up()

    def _take(self, message: dict, blob: bytes | None) -> None:
        try:
            out = self._translate(message, blob)
        except Exception as exc:  # costs this message; the numbering stays whole
            self.manager.problem(f"translate {type(exc).__name__}",
                                 f"session {self.id}: a {message['type']} message could not "
                                 f"be shown: {exc!r}")
            out = None
        self.seq = message["seq"]  # with its text: the cache is seq's, always
        self._keep(wire.encode(out) if out is not None else None)

    def _translate(self, message: dict, blob: bytes | None) -> dict | None:
        """A worker message as the page gets it (None: the page needs nothing)."""
        kind, seq = message["type"], message["seq"]
        if kind == "session_ended":
            self._ended()
            return wire.session_status("lost", ENDED.get(message.get("reason"), ENDED[None]),
                                       seq)
        if kind == "session_restarted":
            return wire.session_status("restarted", "restarted on request: variables are "
                                       "cleared", seq)
        cell, execution = message.get("cell"), message.get("execution")
        if not isinstance(cell, str):
            return None
        interact = message.get("interact")
        if kind == "queued":
            if interact:
                values = message.get("values")
                return wire.interact_run(cell, interact, execution, seq,
                                         values if isinstance(values, dict) else None)
            self.cells.pop(cell, None)
            self.cells[cell] = {"code": message.get("code") or "", "execution": execution,
                                "state": "queued"}
            return wire.queued(cell, execution, seq)
        if kind == "running":
            if interact:
                return None
            self._cell_state(cell, execution, state="running")
            return wire.running(cell, execution, seq)
        out = {k: v for k, v in message.items() if k not in ("session", "re")}
        if kind == "image":
            refusal = self._store_image(out, blob, message["mime"])
            if refusal:
                out = wire.notice(cell, execution, refusal, interact, seq)
        if kind == "done" and not interact:
            self._cell_state(cell, execution, state="done", status=message["status"])
        return out

    def _cell_state(self, cell: str, execution: str | None, **state) -> None:
        known = self.cells.get(cell)
        if known is not None and known.get("execution") == execution:
            known.update(state)

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

    # -- requests from browsers

    def execute(self, cell: str, code: str, options: dict | None = None) -> None:
        """``options``: the worksheet's typeset and language switches."""
        execution = _new_execution()
        try:
            self._ensure_worker_session()
            self._send("execute", execution, cell=cell, code=code, direct=False,
                       **(options or {}))
            self._record("running")  # its last activity
        except (NoWorker, WorkerUnavailable) as exc:
            self._refused(cell, execution, "killed", str(exc))

    def interact(self, cell: str, interact_id: str, values: dict) -> None:
        """Re-run an interact's function with new control values."""
        execution = _new_execution()
        if not (self.live and self.link and self.link.alive):
            self._refused(cell, execution, "killed",
                          "This interact's session has ended; run its cell again.",
                          interact_id)
            return
        try:
            self._send("interact", execution, cell=cell, interact=interact_id, values=values,
                       direct=False)
        except WorkerUnavailable as exc:
            self._refused(cell, execution, "killed", str(exc), interact_id)

    def _send(self, kind: str, execution: str, **fields) -> None:
        """A request about one execution; a refusal comes back to execute_refused."""
        request_id = self.manager.expect_refusal(self, execution, fields.get("cell", ""),
                                                 fields.get("interact"))
        self.link.send(kind, request_id, session=self.id, execution=execution, **fields)

    def complete(self, connection: Connection, cell: str, before_cursor: str) -> None:
        """Names completing the one before the cursor, for the page that asked
        (never into the log: no other page wants them). No session yet, or a
        busy one: no names."""
        answer = wire.completions(cell)
        code = before_cursor[-COMPLETION_CONTEXT:]
        if not (self.live and self.link and self.link.alive):
            connection.send(answer)
            return
        execution = _new_execution()
        self.completions[execution] = (connection, answer, code)
        try:
            self._send("complete", execution, code=code, cursor=len(code))
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

    def execute_refused(self, execution: str, cell: str, interact: str | None,
                        message: dict) -> None:
        if execution in self.completions:  # busy: no names this time
            self._answer_completion(execution)
            return
        if message.get("code") in ("no_such_session", "ended"):
            self.live = False
        self._refused(cell, execution, "killed", f"The worker refused it: {message['message']}",
                      interact)

    def _refused(self, cell: str, execution: str, status: str, notice: str,
                 interact: str | None = None) -> None:
        """An execution that never ran: its pages hear why, and its done."""
        if not interact:
            self.cells.pop(cell, None)
            self.cells[cell] = {"code": "", "execution": execution, "state": "done",
                                "status": status}
            self._direct(wire.queued(cell, execution))
        self._direct(wire.notice(cell, execution, notice, interact))
        self._direct(wire.done(cell, execution, status, interact))

    def _ensure_worker_session(self) -> None:
        with self.starting:
            if self.live and self.link and self.link.alive:
                return
            if self.adopt(self.seq):  # another frontend may have started it anew
                return
            if self.unanswered:
                # It may still run there (a worker just back from a stop has a
                # backlog): a fresh one elsewhere would hide its variables.
                raise WorkerUnavailable(
                    f"{', '.join(self.unanswered)} did not answer in time and may still "
                    "hold this session; run the cell again in a moment.")
            self.link, _ = self.manager.start_worker_session(
                self, session_id=self.id, seq=self.seq, owner_tag=self.browser)
            self.link.watch(self.id)
            self.live = True
            self._record("running")
            if self.layout is not None:
                self._quietly("layout", session=self.id, cells=self.layout)

    def arrange(self, cells: list[dict]) -> None:
        """The page's layout: kept here, and by the worker with the session (a
        session not started yet gets it when it starts)."""
        self.layout = cells
        if self.live and self.link:
            self._quietly("layout", session=self.id, cells=cells)

    def interrupt(self) -> None:
        if self.live and self.link:
            self._quietly("interrupt", session=self.id)

    def restart(self) -> None:
        now = time.monotonic()
        if self.live and self.link and now >= self.restart_after:
            self.restart_after = now + RESTART_EVERY  # a burst of them is one restart
            self._quietly("restart", session=self.id)

    def end(self) -> None:
        """Let go of it: its worker ends it soon unless some page watches it."""
        self.forget()
        if self.live and self.link:
            self._quietly("release", session=self.id)

    def forget(self) -> None:
        """This frontend stops watching (the session goes on in its worker)."""
        if self.link is not None:
            self.link.unwatch(self.id)
            self.manager.route.pop((self.link.name, self.id), None)
        self.drop_log()

    def _quietly(self, kind: str, **fields) -> None:
        with contextlib.suppress(WorkerUnavailable):
            self.link.send(kind, **fields)

    # -- the end

    def _record(self, state: str) -> None:
        if self.manager.records is not None:
            self.manager.records.record(self.id, self.browser, state,
                                        self.link.name if self.link else None)

    def _ended(self) -> None:
        self.live = False
        self._record("ended")
        for state in self.cells.values():
            if state["state"] != "done":
                state.update(state="done", status="killed")

    def worker_lost(self, why: str) -> None:
        """Every unfinished execution ends now, with a notice: never a spinner
        forever. Every frontend watching says so to its own pages."""
        self.live = False
        self._record("lost")
        if self.link is not None:
            self.link.unwatch(self.id)
        if "restarted" in why:
            text = ("The worker running this session stopped and restarted; your variables "
                    "are gone and the next run starts a fresh session.")
        else:
            text = (f"The worker running this session stopped answering ({why}). If it "
                    "comes back, the session goes on; else the next run starts a fresh one.")
        for cell, state in self.cells.items():
            if state["state"] != "done":
                state.update(state="done", status="killed")
                self._direct(wire.notice(cell, state["execution"], text))
                self._direct(wire.done(cell, state["execution"], "killed"))
        for execution in list(self.completions):
            self._answer_completion(execution)
        self._direct(wire.session_status("lost", text))
        gevent.spawn(self._find_again)

    def _find_again(self) -> None:
        """A page on another frontend may start it anew on another worker:
        while pages here follow it, look for it, so they see that too."""
        deadline = time.monotonic() + FIND_AGAIN_FOR
        while time.monotonic() < deadline and self.listeners and not self.live:
            gevent.sleep(1.0)
            with self.starting:
                if not self.live and self.listeners and self.adopt(self.seq):
                    self._direct(wire.session_status("running", "the session runs again"))
                    return


# Why a worker ended a session, as its page says it.
ENDED = {
    "released": "This session was closed while its page was away, to make room for others; "
                "the next run starts a fresh session.",
    "left": "This session ended: no page had it open for a while. The next run starts a "
            "fresh session.",
    "idle": "This session ended after a long idle time; the next run starts a fresh one.",
    "closed": "This worksheet was closed from another tab, to make room there; the next run "
              "starts a fresh session.",
    None: "The session ended; the next run starts a fresh one.",
}


def _new_execution() -> str:
    """Unique across frontends: each names the executions it sends."""
    return secrets.token_hex(8)


class SessionManager:
    def __init__(self, db, quotas: Quotas, say: Callable[[str], None]):
        self.db = db
        self.quotas = quotas
        self.say = say
        self.pool: WorkerPool | None = None
        self.sessions: dict[str, Session] = {}
        self.route: dict[tuple[str, str], object] = {}  # (worker, session) -> its view
        # Requests whose only answer is a refusal: request id -> (view, execution,
        # cell, interact); the oldest go first (a refusal comes within moments).
        self.refusals: OrderedDict[str, tuple] = OrderedDict()
        self.reaper = None
        self.log_bytes = 0  # all sessions' logs together
        self.problem = OncePerKind(say)  # faults of ours, logged once per kind
        self.connections: dict[str, Connection] = {}  # open websockets, by id
        # ... and by browser: a message to one browser finds its pages at once
        self.by_browser: dict[str, set[Connection]] = {}
        self.table: BrowserTable | None = None  # where they are, for everyone to see
        self.records: SessionTable | None = None  # the sessions table
        self.bus: Bus | None = None  # the other frontends
        self.entries: list[str] = []  # the haproxies' URLs, when pages come through them

    def client(self, name: str, key) -> WorkerClient:
        """Who this frontend is to its workers; their messages come back here."""
        return WorkerClient(name, key, self.on_worker_message, self.on_worker_lost)

    def start(self) -> None:
        if self.pool is not None:
            self.pool.start()
        for writer in (self.table, self.records):
            if writer is not None:
                writer.start()
        if self.bus is not None:
            self.bus.start()
        self.reaper = gevent.spawn(self._reap)

    def stopped(self) -> None:
        """The server stopped (SIGTERM): our rows leave the browsers table now
        (the registry listener would clear them too, a little later)."""
        for connection in list(self.connections.values()):
            self.disconnected(connection)
        for writer in (self.table, self.records):
            if writer is not None:
                with contextlib.suppress(Exception), gevent.Timeout(3):
                    writer.sync()
        if self.bus is not None:
            self.bus.close()

    def frontends(self) -> list[str]:
        """Where a page may reconnect: the entries (haproxies) when browsers
        come in through them, else the live frontends' URLs (this one first)."""
        if self.entries:
            return list(self.entries)
        return self.bus.live_urls() if self.bus is not None else []

    # -- websockets

    def connected(self, connection: Connection) -> None:
        self.connections[connection.id] = connection
        self.by_browser.setdefault(connection.browser, set()).add(connection)
        if self.table is not None:
            self.table.connected(connection.id, connection.browser)

    def following(self, connection: Connection, session: Session) -> None:
        if self.table is not None:
            self.table.followed(connection.id, session.id)

    def disconnected(self, connection: Connection) -> None:
        self.connections.pop(connection.id, None)
        pages = self.by_browser.get(connection.browser, set())
        pages.discard(connection)
        if not pages:
            self.by_browser.pop(connection.browser, None)
        if self.table is not None:
            self.table.closed(connection.id)

    def deliver(self, message: dict) -> int:
        """Show a bus message (web/bus.py) on the pages here it is meant for;
        how many got it. Until accounts exist, a browser is its own account."""
        to, target = message["to"], message["target"]
        shown = wire.announcement(message["id"], message["text"], message["sender"])
        if to == "all":
            pages = list(self.connections.values())
        elif to in ("browser", "account"):
            pages = list(self.by_browser.get(target, ()))
        else:  # a session's pages here are the listeners of its view
            session = self.sessions.get(target)
            pages = list(session.listeners) if session is not None else []
        for connection in pages:
            connection.send(shown)
        return len(pages)

    # -- sessions of browsers

    def open(self, session_id: str | None, browser: str, ip: str,
             last_seq: int = 0, starting: Callable[[], None] | None = None,
             per_browser: int | None = None) -> Session:
        """The session a page asks for: here already, or found on a worker (it
        was served by another frontend, or by this one before it restarted);
        else a new one. Another browser that learned the id gets its own.
        ``starting`` is called (and may refuse) before a new one starts;
        ``per_browser``: a tighter limit than the quota (anonymous pages)."""
        known = self.sessions.get(session_id) if session_id else None
        if known is not None and known.browser == browser:
            return known
        limit = min(self.quotas.per_browser, per_browser or self.quotas.per_browser)
        self._make_room(lambda s: s.browser == browser, limit,
                        f"this browser already has {{n}} worksheets open (the limit is "
                        f"{limit}); open one of them here, or close one", listed=True)
        self._make_room(lambda s: s.ip == ip, self.quotas.per_ip,
                        f"{{n}} sessions are open from your address (the limit is "
                        f"{self.quotas.per_ip}); close a tab or try again later")
        ended = None
        if known is None and protocol.is_session_id(session_id):
            found = Session(self, browser, ip, session_id)
            self.sessions[found.id] = found
            if found.adopt(last_seq):
                return found
            del self.sessions[found.id]
            ended = found.end_reason
        if starting is not None:
            starting()
        session = Session(self, browser, ip)
        self.sessions[session.id] = session
        session.end_reason = ended  # said to the page once it is attached
        return session

    def _make_room(self, mine: Callable[[Session], bool], limit: int, refusal: str,
                   listed: bool = False) -> None:
        """Within ``limit``, or letting detached sessions go (oldest first) gets
        there; else a quota error (``listed``: naming the sessions, which are
        the asker's own, so that its page can offer them). Sessions whose page
        left wait for nobody."""
        now = time.monotonic()
        held = [s for s in self.sessions.values() if mine(s)]
        counted = [s for s in held if s.counts_toward_quota(now)]
        if len(counted) >= limit:
            details = {"limit": limit, "sessions": [s.summary(now) for s in counted]} \
                if listed else {}
            raise wire.WireError("quota", refusal.format(n=len(counted)), details)
        detached = sorted((s for s in held if s.detached_at is not None),
                          key=lambda s: s.detached_at)
        for session in detached[:max(len(held) - limit + 1, 0)]:
            self.close(session)

    def close(self, session: Session) -> None:
        session.end()
        self.sessions.pop(session.id, None)

    def close_for(self, browser: str, session_id: str) -> None:
        """A page over the limit closes one of its browser's sessions (another
        browser's, or one not here, is left alone: the same answer)."""
        session = self.sessions.get(session_id)
        if session is not None and session.browser == browser:
            for connection in list(session.listeners):
                connection.send(wire.session_status("lost", ENDED["closed"]))
            self.close(session)

    def detached_count(self) -> int:
        """Sessions no page here is attached to (dropped after VIEW_GRACE)."""
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

    def expect_refusal(self, session: Session, execution: str, cell: str,
                       interact: str | None) -> str:
        """A request id whose refusal, if any, finds its way back here."""
        request_id = f"x{next(_request_ids)}"
        self.refusals[request_id] = (session, execution, cell, interact)
        while len(self.refusals) > MAX_REFUSALS:
            self.refusals.popitem(last=False)
        return request_id

    def start_worker_session(self, owner, engine: str | None = None,
                             wait: float = WAIT_FOR_WORKER, session_id: str | None = None,
                             seq: int = 0, owner_tag: str | None = None
                             ) -> tuple[WorkerLink, str]:
        """A worker session for ``owner`` (a Session, which names its id, or an
        API collector) on the least loaded live worker; waits a little for
        workers still loading. When every worker is full, a full one is asked
        anyway: it lets go of a session no page watches, if it has one."""
        browser = owner_tag
        fields = {"session": session_id, "seq": seq, "owner": browser or None}
        fields = {k: v for k, v in fields.items() if v is not None}
        deadline = time.monotonic() + wait
        while True:
            links = self.pool.choose(engine) if self.pool else []
            if self.pool and not links:
                links = self.pool.live(engine)
            for link in links:
                try:
                    reply = link.request("start", timeout=10, **fields)
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

    # -- from workers

    def on_worker_message(self, link: WorkerLink, message: dict, blob: bytes | None) -> None:
        if message["type"] == "error" and "session" not in message:
            # A refused request (execution errors carry their session).
            refused = self.refusals.pop(str(message.get("re")), None)
            if refused is not None:
                session, execution, cell, interact = refused
                session.execute_refused(execution, cell, interact, message)
            return
        owner = self.route.get((link.name, message.get("session")))
        if owner is not None:
            owner.on_worker_message(message, blob)

    def on_worker_lost(self, link: WorkerLink, why: str) -> None:
        for (name, worker_session), owner in list(self.route.items()):
            if name == link.name:
                del self.route[(name, worker_session)]
                owner.worker_lost(why)

    def _reap(self) -> None:
        """Views no page here follows are dropped (the worker keeps the session
        for its linger time, for a page that comes back here or elsewhere)."""
        while True:
            gevent.sleep(1)
            now = time.monotonic()
            for session in list(self.sessions.values()):
                if session.detached_at is None:
                    continue
                waited = now - session.detached_at
                if session.left and waited > LEAVE_GRACE:
                    self.close(session)  # its tab was closed: the worker may end it
                elif waited > VIEW_GRACE:
                    session.forget()
                    self.sessions.pop(session.id, None)
