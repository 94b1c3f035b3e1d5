"""The worker parent: a fork server behind a CURVE-secured ZeroMQ ROUTER socket.

One thread, one poll loop over the ROUTER socket, the ZAP socket that admits
only known clients, every session's channel and a wakeup pipe for
SIGCHLD/SIGTERM. The parent is the only writer to the socket, so it numbers
every session's messages; it is also the only judge of them: a session runs
hostile code, so what it sends is validated and counted here, outside its
reach (the per-execution output cap), and nothing it sends can stop the loop.

Nothing grows without bound: when a client does not keep up, the socket's
high-water mark holds its messages back, and the worker stops reading the
channels of that client's sessions until it does (their output waits in the
sessions, which block writing; their wall time goes on).

Sessions are started through ``sage_worker.sandbox``; the worker kills only
processes it can prove are its own: its children, and with them their pid
namespaces.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import socket
import time
import traceback
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

import zmq

from sage_worker import channel, curve, protocol, sandbox
from sage_worker.cgroups import Cgroups, Group
from sage_worker.executor import Executor
from sage_worker.isolation import IsolationError, Sandbox
from sage_worker.limits import Limits
from sage_worker.once import OncePerKind
from sage_worker.protocol import ProtocolError
from sage_worker.session import Execution, Session, State
from sage_worker.sessionlog import LogBudget
from sage_worker.system import System
from salvusctl import logline

MAX_QUEUE = 100
OUTPUT_FIELDS = {
    "stream": ("name", "text"), "result": ("data",), "image": ("mime", "size", "sha1", "width"),
    "error": ("ename", "evalue", "traceback"), "notice": ("text",), "done": ("status",),
    "interact": ("interact", "controls"), "completions": ("matches", "start", "end"),
}
# Messages queued in ZeroMQ for one client before the worker holds back; a
# message is at most one 64 KiB output chunk or one image.
CLIENT_HWM = 256
PARKED_LIMIT = 1000  # replies held for a client that does not read (beyond: dropped)
# Forking sessions takes milliseconds each: a burst of starts is served a few
# per turn of the loop, so pings (and everything else) are answered meanwhile.
STARTS_PER_TURN = 4
# The session's own cap on its text output comes first. The parent counts every
# byte a session writes into its channel, valid or not, and cuts at twice the
# cap (JSON escapes may double honest text): a tampered session gains nothing.
OUTPUT_SLACK = 64 << 10
STRAY_LIMIT = 64 << 10  # bytes a session may send while nothing runs before it is ended
RESTART_EVERY = 1.0  # seconds between two restarts of one session
RELEASE_GRACE = 15.0  # seconds a released session waits for a page to come back
ENDED_KEPT = 10000  # sessions whose end reason a returning page may still ask for
HEX = set("0123456789abcdef")  # session ids are uuid4().hex
# What the worker keeps once sessions can start (all of them root's):
# mounts and namespaces, switching to session uids, handing a session its home,
# reading an install whose folders only their owner may enter, and (in each
# session's init) passing an interrupt on to the session's own uid.
CAPABILITIES = {0, 2, 5, 6, 7, 21}  # CHOWN, DAC_READ_SEARCH, KILL, SETGID, SETUID, SYS_ADMIN


@dataclass(frozen=True)
class Settings:
    endpoint: str
    name: str
    sandbox: Sandbox
    uid_range: range | None  # per-session uids (isolation full)
    server_key: curve.KeyPair | None = None  # None: no CURVE (unit tests only)
    clients: frozenset[bytes] = frozenset()  # allowed client public keys (Z85)
    spares: int = 2  # children kept forked and ready
    publish: str | None = None  # the PUB endpoint every session message goes out on
    log_mb: int = 256  # all sessions' logs together (sessionlog.py)
    linger: float = 600.0  # seconds a session nobody watches lives on

    @property
    def limits(self) -> Limits:
        return self.sandbox.limits


def log(message: str) -> None:
    """One line (salvusctl/logline.py). A log sink that is gone costs the
    line, never the worker."""
    logline.say(message, logging.ERROR if message.startswith("Error: ") else logging.INFO)


def _await_end(child_end: socket.socket) -> None:
    """A probe session: confined, it waits to be ended and runs nothing."""
    while child_end.recv(4096):
        pass


class Worker:
    def __init__(self, settings: Settings, engine, system: System | None = None,
                 say: Callable[[str], None] = log):
        self.settings = settings
        self.engine = engine
        self.system = system or System()
        self.say = say
        self.sessions: dict[str, Session] = {}  # handed out, by id
        self.spares: deque[Session] = deque()  # forked ahead, not yet handed out
        self.by_pid: dict[int, Session] = {}  # every child not yet reaped
        self.parked: dict[bytes, deque[list[bytes]]] = {}  # per client: held-back messages
        self.starts: deque[tuple[bytes, dict]] = deque()  # start requests not yet served
        # Sessions with an execution (their timers are checked on every turn;
        # the idle ones, often hundreds, once a second).
        self.running: set[Session] = set()
        self.next_idle_check = 0.0
        self.cgroups: Cgroups | None = None  # per-session accounting, where the host has it
        self.groups_to_remove: list[Group] = []
        self.problem = OncePerKind(say)  # what hostile input causes, logged once per kind
        self.forks_left = STARTS_PER_TURN  # session forks still allowed in this turn
        self.refill_due = True
        self.watch_changed = True  # sessions or held-back clients changed: re-poll
        self.stopping = False
        self.lifeline: tuple[int, int] | None = None
        self.own_pid_ns: int | None = None
        self.reports: dict[int, Session] = {}  # report pipes of sessions being set up
        self.ended: OrderedDict[str, str] = OrderedDict()  # why recent sessions ended
        self.context = zmq.Context()
        self.router = self.context.socket(zmq.ROUTER)
        self.zap = self.context.socket(zmq.REP)
        for sock in (self.router, self.zap):
            sock.linger = 0
        self.router.sndhwm = CLIENT_HWM
        self.router.rcvhwm = 1000
        # A full client raises Again instead of dropping silently; a restarted
        # client (same routing id) takes over its old connection.
        self.router.router_mandatory = True
        self.router.router_handover = True
        # Session messages for every frontend that watches: an XPUB, so that
        # subscriptions arrive as events (which sessions are watched). A slow
        # subscriber loses messages here and repairs the gap with replay.
        self.pub = self.context.socket(zmq.XPUB)
        self.pub.linger = 0
        # Every subscription is told (a second frontend's too), the last
        # unsubscription only: each new watcher gets a "watched" mark.
        self.pub.setsockopt(zmq.XPUB_VERBOSE, 1)
        self.pub.sndhwm = 10000
        self.budget = LogBudget(settings.log_mb << 20)

    # ------------------------------------------------------------ lifecycle

    def open(self) -> None:
        """Bind (with CURVE and ZAP when keys are set) and prepare to fork."""
        if self.settings.server_key is not None:
            self.zap.bind(curve.ZAP_ENDPOINT)
            curve.serve_as(self.router, self.settings.server_key)
            curve.serve_as(self.pub, self.settings.server_key)
        self.router.bind(self.settings.endpoint)
        if self.settings.publish:
            self.pub.bind(self.settings.publish)
        # Only this process holds the write end: when it dies, however it
        # dies, every session's init sees the pipe close and ends.
        self.lifeline = os.pipe()
        if self.settings.sandbox.full:  # to come back to after forking each session's init
            self.own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)

    def use_cgroups(self) -> None:
        """Per-session cgroups, where the host offers them (see cgroups.py)."""
        self.cgroups = Cgroups.detect(self.settings.name)

    def keep_only_needed_capabilities(self) -> None:
        if os.geteuid() == 0:
            self.system.keep_capabilities(CAPABILITIES if self.settings.sandbox.full else set())

    def preflight(self) -> None:
        """Start and end one session, so that isolation that cannot be applied
        stops the worker now, with the reason, instead of failing users later."""
        try:
            probe = self._fork_session(run=_await_end, check_install=True)
        except OSError as exc:
            raise IsolationError(str(exc)) from None
        result = sandbox.read_report(probe.report)
        self._forget_report(probe)
        self._kill(probe, "ended")
        deadline = time.monotonic() + 5
        while self.by_pid and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.005)
        if result != "ready":
            raise IsolationError(result.removeprefix("error "))

    def serve(self) -> None:
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(wake_write, False)
        signal.set_wakeup_fd(wake_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.zap, zmq.POLLIN)
        poller.register(self.pub, zmq.POLLIN)
        poller.register(wake_read, zmq.POLLIN)
        polled: dict[int, Session] = {}  # channels and setup reports, by descriptor
        try:
            while not self.stopping:
                if self.watch_changed:
                    polled = self._update_poller(poller, polled)
                events = dict(poller.poll(self._poll_timeout_ms()))
                reported = [self.reports[fd] for fd in events if fd in self.reports]
                readable = [polled[fd] for fd in events
                            if fd in polled and fd not in self.reports]
                self._step(events, readable, reported, wake_read)
        finally:
            self.shutdown()
            signal.set_wakeup_fd(-1)
            os.close(wake_read)
            os.close(wake_write)

    def _update_poller(self, poller: zmq.Poller, polled: dict[int, Session]
                       ) -> dict[int, Session]:
        """Poll the channels of live sessions whose client reads its messages:
        changed only when sessions come, go or their client holds back, not
        on every turn of the loop (a worker holds hundreds)."""
        self.watch_changed = False
        wanted = {s.sock.fileno(): s for s in self.sessions.values()
                  if s.state is not State.DEAD and s.owner not in self.parked}
        wanted.update(self.reports)
        for fd in polled.keys() - wanted.keys():
            poller.unregister(fd)
        for fd in wanted.keys() - polled.keys():
            poller.register(fd, zmq.POLLIN)
        return wanted

    def _step(self, events: dict, readable: list[Session], reported: list[Session],
              wake_read: int) -> None:
        """One turn of the loop. An unexpected error costs what it was handling,
        never the worker: it is logged and the loop goes on."""
        self.forks_left = STARTS_PER_TURN
        try:
            for session in reported:
                self._read_report(session)
            if events.get(self.zap):
                self._answer_zap()
            if events.get(self.pub):
                self._read_subscriptions()
            if not events and self.refill_due:
                # Forking spares waits for a quiet moment: it would delay
                # requests that are already on their way.
                self.refill()
            for session in readable:
                if session.state is not State.DEAD:
                    self._read_child(session)
            if events.get(wake_read):
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_read, 4096)
            self._reap()
            self._flush_parked()
            if events.get(self.router):
                self._read_requests()
            self._serve_starts()
            self._timers()
        except Exception as exc:
            where = traceback.extract_tb(exc.__traceback__)[-1]
            self.problem(f"{type(exc).__name__}@{where.filename}:{where.lineno}",
                         f"internal error (the worker goes on): {traceback.format_exc()}")

    def _on_stop(self, _signum, _frame) -> None:
        self.stopping = True

    def shutdown(self) -> None:
        for session in [*self.sessions.values(), *self.spares]:
            self._kill(session, "worker_stopping")
        deadline = time.monotonic() + 5
        while self.by_pid and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.01)
        self.router.close(linger=0)
        self.pub.close(linger=0)
        self.zap.close(linger=0)
        self.context.term()
        for group in self.groups_to_remove:
            group.remove()
        if self.cgroups is not None:
            self.cgroups.remove()
        if not self.settings.sandbox.full:
            with contextlib.suppress(OSError):
                self.settings.sandbox.sessions_dir.rmdir()  # only if every session folder is gone

    def prepare_sessions_dir(self) -> None:
        """The sessions' folder: with isolation full, an empty mount point for
        each session's own file system (in its mount namespace only, so nothing
        is ever left on the host); without, the parent of their folders, from
        which a crashed worker's session folders (and nothing else) go."""
        folder = self.settings.sandbox.sessions_dir
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        if not self.settings.sandbox.full:
            for old in folder.iterdir():
                if old.is_dir() and len(old.name) == 32 and set(old.name) <= HEX:
                    shutil.rmtree(old, ignore_errors=True)

    # ------------------------------------------------------------ requests

    def _answer_zap(self) -> None:
        refused = curve.answer(self.zap, self.settings.clients)
        if refused is not None:
            self.problem(f"refused {refused.decode(errors='replace')}",
                         f"refused a client with an unknown CURVE key ({refused.decode()})")

    def _read_requests(self) -> None:
        for _ in range(1000):  # bounded, so children and timers get their turn
            try:
                frames = self.router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            identity, rest = frames[0], frames[1:]
            if rest and rest[0] == b"":
                rest = rest[1:]  # a REQ client's delimiter
            try:
                self._handle(identity, protocol.parse_request(rest))
            except ProtocolError as err:
                self._send(identity, protocol.error(err))
            except Exception as exc:  # never die because of one request
                self.problem(f"request {type(exc).__name__}",
                             f"internal error: {traceback.format_exc()}")
                self._send(identity, protocol.error(ProtocolError(
                    "internal", f"internal error: {type(exc).__name__}: {exc}")))

    def _handle(self, identity: bytes, request: dict) -> None:
        kind, re = request["type"], request["id"]
        if kind == "ping":
            # Behind any held-back output: a client that reads slowly still
            # hears from us; one that does not read at all fills PARKED_LIMIT.
            self._send(identity, protocol.reply("pong", re, **self.status()))
            return
        if kind == "start":
            self.starts.append((identity, request))
            return
        if kind == "claim":
            ended = self._claim(identity, set(request["sessions"]))
            self._send(identity, protocol.reply("claimed", re, ended=ended))
            return
        session = self.sessions.get(request["session"])
        if session is None or session.state is State.DEAD:
            # A killed session stays here, dead, until its child is reaped:
            # its reason is already known, as it will be in ``ended``.
            why = session.end_reason if session is not None else None
            why = why or self.ended.get(request["session"])
            if why is not None:  # a page that comes back learns why it is gone
                raise ProtocolError("ended", why, re)
            raise ProtocolError("no_such_session",
                                f"no session {request['session']!r} on this worker", re)
        if kind in ("execute", "interact"):
            self._execute(session, identity, request, re)
        elif kind == "complete":
            # Completion runs in the session, between executions: a session
            # that is computing cannot look at its names (nor can Jupyter's).
            # Behind another completion it waits: a fast typist asks again
            # before the last answer's done has come back.
            if self._computing(session):
                raise ProtocolError("busy", "the session is running; complete when it is "
                                    "idle", re)
            self._execute(session, identity, request, re)
        elif kind == "replay":
            self._replay(session, identity, request["after"], re)
        elif kind == "interrupt":
            self._interrupt(session)
            self._send(identity, protocol.reply("interrupting", re, session=session.id))
        elif kind == "restart":
            session = self._restart(session, identity, re)
            self._send(identity, protocol.reply("restarted", re, session=session.id,
                                                pid=session.pid))
        elif kind == "end":
            self._kill(session, "ended")
            self._send(identity, protocol.reply("ended", re, session=session.id))
        elif kind == "release":
            session.release_at = time.monotonic() + RELEASE_GRACE
            self._send(identity, protocol.reply("released", re, session=session.id))
        elif kind == "layout":
            session.log.layout = request["cells"]
            self._send(identity, protocol.reply("laid_out", re, session=session.id))

    @staticmethod
    def _computing(session: Session) -> bool:
        """Running or about to run code (completions do not count)."""
        waiting = [*session.queue, session.current] if session.state is not State.IDLE \
            else list(session.queue)
        return any(execution is None or execution.cursor is None for execution in waiting)

    def _serve_starts(self) -> None:
        while self.starts and self.forks_left > 0:
            identity, request = self.starts.popleft()
            try:
                session = self._start(identity, request["id"], request.get("session"),
                                      request.get("seq", 0), fresh_id=True)
                session.browser = request.get("owner", "")
                self._send(identity, protocol.reply("started", request["id"],
                                                    session=session.id, pid=session.pid))
            except ProtocolError as err:
                self._send(identity, protocol.error(err))

    def _claim(self, identity: bytes, kept: set[str]) -> int:
        """A client says which of its sessions it still holds (after it lost
        us for a while, or restarted): the others have no owner and end."""
        orphans = [s for s in self.sessions.values()
                   if s.owner == identity and s.id not in kept and s.state is not State.DEAD]
        for session in orphans:
            self._kill(session, "abandoned")
        return len(orphans)

    def status(self) -> dict:
        limits = self.settings.limits
        busy = sum(s.state is not State.IDLE for s in self.sessions.values())
        return {"name": self.settings.name, "engine": self.engine.name, "pid": os.getpid(),
                "sessions": len(self.sessions), "busy": busy, "spares": len(self.spares),
                "load": round(len(self.sessions) / self._capacity(), 3),
                "limits": dataclasses.asdict(limits),
                "isolation": {**self.settings.sandbox.describe(),
                              "accounting": self.cgroups.describe() if self.cgroups
                              else "per-process rlimits (no cgroups on this host)"}}

    def _send(self, identity: bytes, frames: list[bytes]) -> None:
        parked = self.parked.get(identity)
        if parked is not None:  # keep its messages in order behind the held ones
            if len(parked) < PARKED_LIMIT:
                parked.append(frames)
            return
        try:
            self.router.send_multipart([identity, *frames], zmq.NOBLOCK)
        except zmq.Again:
            self.parked[identity] = deque([frames])
            self.watch_changed = True
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                raise
            # The client is gone (it restarted, or was stopped): the message
            # has nobody to reach. Its sessions end by claim or idle timeout.

    def _flush_parked(self) -> None:
        for identity in list(self.parked):
            held = self.parked[identity]
            while held:
                try:
                    self.router.send_multipart([identity, *held[0]], zmq.NOBLOCK)
                except zmq.Again:
                    break
                except zmq.ZMQError:
                    held.clear()  # gone
                    break
                held.popleft()
            if not held:
                del self.parked[identity]
                self.watch_changed = True

    # ------------------------------------------------------------ sessions

    def _capacity(self) -> int:
        """Sessions this worker can hold: its limit, or its uids if fewer (each
        session has a uid of its own), so its load says when it is full."""
        uids = self.settings.uid_range
        if self.settings.sandbox.full and uids is not None:
            return max(min(self.settings.limits.max_sessions, len(uids)), 1)
        return self.settings.limits.max_sessions

    def _free_uid(self) -> int | None:
        if self.settings.uid_range is None:
            return None
        used = {s.uid for s in self.sessions.values()} | {s.uid for s in self.spares} | \
            {s.uid for s in self.by_pid.values()}
        for uid in self.settings.uid_range:
            if uid not in used:
                return uid
        return None

    def _start(self, identity: bytes, re: str, session_id: str | None = None,
               seq: int = 0, fresh_id: bool = False) -> Session:
        """Hand out a spare child (forked and confined ahead of time), or fork one.
        ``fresh_id``: a new session (one of this id must not live here)."""
        if fresh_id and session_id in self.sessions:
            raise ProtocolError("exists", f"session {session_id} lives on this worker "
                                "already; open it", re)
        live = sum(s.state is not State.DEAD for s in self.sessions.values())
        if (fresh_id or session_id is None) and live >= self._capacity() \
                and not self._release_an_unwatched_session():
            raise ProtocolError("busy", f"worker {self.settings.name} is at its limit of "
                                f"{self._capacity()} sessions; use another worker", re)
        try:
            session = self.spares.popleft() if self.spares else self._fork_session()
        except OSError as exc:
            self.say(f"a session could not be started: {exc}")
            raise ProtocolError("isolation_failed", f"the session could not be started "
                                f"confined ({exc})", re) from None
        if session is None:
            raise ProtocolError("busy", "no free session uid on this worker", re)
        session.id = session_id or session.id
        session.owner = identity
        session.seq = seq
        session.unwatched_since = time.monotonic()
        session.last_active = time.monotonic()
        self.sessions[session.id] = session
        self.refill_due = True
        self.watch_changed = True
        logline.say(f"session started (pid {session.pid}, uid {session.uid})", session=session.id)
        return session

    def _fork_session(self, run: Callable[[socket.socket], None] | None = None,
                      check_install: bool = False) -> Session | None:
        box = self.settings.sandbox
        uid = self._free_uid()
        if box.full and uid is None:
            return None
        session_id = uuid.uuid4().hex
        if box.full:
            home, workdir = box.sessions_dir, None  # a mount point; the files live in the session
        else:
            home = workdir = box.sessions_dir / session_id
            workdir.mkdir(mode=0o700)
        self.forks_left -= 1
        group = None
        parent_end, child_end = channel.pair()
        try:
            if self.cgroups is not None:
                group = self.cgroups.create(session_id, self._memory_mb() << 20,
                                            box.limits.processes)
            spawned = sandbox.spawn(self.system, box, uid, home, child_end, self.lifeline,
                                    self.own_pid_ns, run or self._run_session,
                                    self.engine.session_environment(),
                                    check_install, group)
        except BaseException:
            parent_end.close()
            if workdir:
                shutil.rmtree(workdir, ignore_errors=True)
            if group is not None:
                self.groups_to_remove.append(group)
            raise
        finally:
            child_end.close()
        session = Session(session_id, spawned.pid, parent_end, b"", uid, workdir,
                          time.monotonic(), report=spawned.report, group=group)
        self.by_pid[spawned.pid] = session
        self.reports[spawned.report] = session
        self.watch_changed = True
        return session

    def _read_report(self, session: Session) -> None:
        """A session being set up said something: at the end, ready or why not."""
        try:
            data = os.read(session.report, 4096)
        except OSError:
            data = b""
        session.report_data += data
        if data:
            return
        result = sandbox.outcome(session.report_data)
        self._forget_report(session)
        if result != "ready" and session.state is not State.DEAD:
            session.failure = result.removeprefix("error ")
            self.say(f"a session could not be started confined: {session.failure}")
            self._kill(session, "isolation_failed")

    def _forget_report(self, session: Session) -> None:
        self.reports.pop(session.report, None)
        os.close(session.report)
        session.report = None
        self.watch_changed = True

    def _run_session(self, child_end: socket.socket) -> None:
        """In the confined session process: user code from here on."""
        self.engine.reseed()
        executor = Executor(channel.ChildEnd(child_end), self.engine,
                            self.settings.limits.output_bytes, self.system.flush_c_stdio)
        executor.serve()

    def refill(self) -> None:
        """Keep ``spares`` children ready, so that a new session costs no fork;
        one per quiet moment, so a burst of requests never waits for several."""
        if len(self.spares) < self.settings.spares:
            try:
                spare = self._fork_session()
            except OSError as exc:
                self.say(f"a spare session could not be started: {exc}")
                spare = None
            if spare is not None:
                self.spares.append(spare)
                self.refill_due = len(self.spares) < self.settings.spares
                return
        self.refill_due = False

    def _execute(self, session: Session, identity: bytes, request: dict, re: str) -> None:
        if len(session.queue) >= MAX_QUEUE:
            raise ProtocolError("queue_full", f"{MAX_QUEUE} executions are already waiting "
                                "in this session", re)
        options = {k: request[k] for k in ("typeset", "language", "webgl") if k in request}
        execution = Execution(identity, request["execution"], request.get("code"),
                              request.get("interact"), request.get("values"),
                              request.get("cursor"), options, cell=request.get("cell"),
                              direct=request.get("direct", True))
        session.queue.append(execution)
        session.owner = identity
        if execution.cursor is None:  # completions are the asker's alone
            if execution.cell and execution.interact is None:
                session.log.queued(execution.cell, execution.id, execution.code)
            # An interact's run says its values: a page that comes back shows
            # the controls as they were when its output was made.
            self._announce(session, execution, "queued",
                           **({"values": execution.values} if execution.interact
                              else {"code": execution.code}))
        self._next(session)

    def _next(self, session: Session) -> None:
        if session.state is not State.IDLE or not session.queue:
            return
        execution = session.queue.popleft()
        execution.deadline = time.monotonic() + self.settings.limits.wall_time
        session.current = execution
        self.running.add(session)
        session.set_state(State.BUSY)
        if execution.cursor is None:
            if execution.cell:
                session.log.running(execution.cell, execution.id)
            self._announce(session, execution, "running")
        try:
            if execution.cursor is not None:
                request = {"type": "complete", "execution": execution.id, "code": execution.code,
                           "cursor": execution.cursor}
            elif execution.interact is None:
                request = {"type": "execute", "execution": execution.id, "code": execution.code,
                           **execution.options}
            else:
                request = {"type": "interact", "execution": execution.id,
                           "interact": execution.interact, "values": execution.values}
            session.sock.sendall(channel.encode(request))
        except (BlockingIOError, OSError):
            # The child is gone or not reading: it is killed and reported.
            self._kill(session, "killed")

    def _interrupt(self, session: Session) -> None:
        if session.state is not State.BUSY:
            return
        # With isolation full this reaches the session's init, which passes it
        # on to the session's process group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            self.system.killpg(session.pid, signal.SIGINT)
        session.set_state(State.INTERRUPTING)
        session.current.kill_at = time.monotonic() + self.settings.limits.interrupt_grace

    def _restart(self, old: Session, identity: bytes, re: str) -> Session:
        """A fresh process for the same session, if that takes no more forking
        than this turn of the loop allows (restarts cost what starts cost)."""
        if time.monotonic() - old.restarted_at < RESTART_EVERY:
            raise ProtocolError("busy", "this session was restarted less than a second "
                                "ago; wait a moment", re)
        if self.forks_left <= 0 and not self.spares:
            raise ProtocolError("busy", "the worker is starting many sessions right now; "
                                "try again in a moment", re)
        self._kill(old, "restarted")
        self._finish_dead(old, notify=False)
        fresh = self._start(identity, re, session_id=old.id, seq=old.seq)
        fresh.restarted_at = time.monotonic()
        fresh.log, fresh.watched = old.log, old.watched  # one session, one log
        fresh.unwatched_since, fresh.browser = old.unwatched_since, old.browser
        self.budget.used += fresh.log.bytes
        seq = fresh.next_seq()  # every page of the session hears of it
        self._record(fresh, seq, protocol.event("session_restarted", fresh.id, seq))
        return fresh

    def _kill(self, session: Session, reason: str) -> None:
        """End a session now. Its pid is our own child (with isolation full, the
        init of its pid namespace, whose end takes every process in it)."""
        if session.state is not State.DEAD:
            session.set_state(State.DEAD)
        self.watch_changed = True
        session.end_reason = session.end_reason or reason
        if session.pid in self.by_pid:  # not yet reaped: the pid is still ours
            with contextlib.suppress(ProcessLookupError, PermissionError):
                self.system.killpg(session.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                self.system.kill(session.pid, signal.SIGKILL)

    # ------------------------------------------------------------ children

    def _read_child(self, session: Session, limit: int = channel.READ_LIMIT) -> None:
        try:
            messages, _closed = channel.read_available(session.sock, session.decoder, limit)
        except (ValueError, RecursionError) as exc:
            self.problem("bad channel data", f"session {session.id}: bad channel data "
                         f"({str(exc)[:200]}); ending it")
            self._kill(session, "killed")
            return
        for message, blob, size in messages:
            self._forward(session, message, blob, size)

    def _forward(self, session: Session, message, blob: bytes | None, size: int) -> None:
        """One message a session sent: counted, whatever it is, then checked
        before it goes on."""
        execution = session.current
        if execution is None:  # a well-behaved session sends nothing now
            session.stray += size
            if session.stray > STRAY_LIMIT and session.state is not State.DEAD:
                self.problem("stray output", f"session {session.id} wrote {session.stray} "
                             "bytes while nothing ran; ending it")
                self._kill(session, "killed")
            return
        if not execution.cut and execution.output + size > self._output_cap():
            self._cut(session, execution, message, size)
            return
        execution.output += size
        kind = message.get("type") if isinstance(message, dict) else None
        if not isinstance(kind, str) or kind not in OUTPUT_FIELDS:
            self._malformed(session, execution, "a message of no known kind")
            return
        fields = {k: message.get(k) for k in OUTPUT_FIELDS[kind]}
        if "interact" in message:
            fields["interact"] = message["interact"]
        try:
            protocol.check_output(kind, fields, blob)
        except ProtocolError as err:
            self._malformed(session, execution, err.message)
            return
        if kind == "done":
            self._finish_execution(session, fields["status"])
        elif kind == "error" and execution.timed_out and fields["ename"] == "KeyboardInterrupt":
            # Nobody pressed interrupt: the time limit did. Say which one.
            self._emit(session, "notice", {"text": self._timeout_notice()})
        elif not execution.cut:
            self._emit(session, kind, fields, blob)

    def _timeout_notice(self) -> str:
        return (f"Stopped after {self.settings.limits.wall_time:g} s, the wall_time limit of "
                "one execution on this appliance (its admin sets [worker] wall_time).")

    def _output_cap(self) -> int:
        return 2 * self.settings.limits.output_bytes + OUTPUT_SLACK

    def _cut(self, session: Session, execution: Execution, message, size: int) -> None:
        """The execution reached the cap: what of a stream still fits, a notice,
        then nothing more; the code is interrupted (and killed if it goes on)."""
        room = self._output_cap() - execution.output
        execution.output += size
        execution.cut = True
        stream = message if isinstance(message, dict) else {}
        text = stream.get("text")
        if stream.get("type") == "stream" and isinstance(text, str) and \
                stream.get("name") in ("stdout", "stderr") and room > 0:
            self._emit(session, "stream", {"name": message["name"], "text": text.encode(
                "utf-8", "replace")[:room].decode("utf-8", "ignore")})
        cap = self.settings.limits.output_bytes
        self._emit(session, "notice", {"text": f"Output limit of {cap} bytes reached: the "
                                       "rest was dropped and the execution stopped."})
        self._interrupt(session)

    def _malformed(self, session: Session, execution: Execution, what: str) -> None:
        if not execution.malformed:
            execution.malformed = True
            self.problem(f"malformed: {what[:60]}",
                         f"session {session.id}: dropped a malformed message ({what})")

    def _emit(self, session: Session, kind: str, fields: dict, blob: bytes | None = None) -> None:
        execution = session.current
        if execution.cell:
            fields = {**fields, "cell": execution.cell}
        if execution.interact:  # every message of an interact's run says whose it is
            fields = {**fields, "interact": execution.interact}
        # A completion's names are the asker's alone, not the session's news:
        # they carry the session's current seq and stay out of its log.
        completing = execution.cursor is not None
        seq = session.seq if completing else session.next_seq()
        frames = protocol.output(kind, session.id, execution.id, seq, blob, **fields)
        if execution.direct or completing:
            self._send(execution.owner, frames)
        if not completing:
            self._record(session, seq, frames)

    def _announce(self, session: Session, execution: Execution, kind: str, **fields) -> None:
        """The worker's own news of an execution (queued, running): logged and
        published, not sent to the asker (it knows)."""
        for name in ("cell", "interact"):
            if getattr(execution, name):
                fields[name] = getattr(execution, name)
        seq = session.next_seq()
        self._record(session, seq, protocol.output(kind, session.id, execution.id, seq,
                                                   **fields))

    def _record(self, session: Session, seq: int, frames: list[bytes]) -> None:
        """Into the session's log, and out to the frontends that watch it."""
        self.budget.used += session.log.append(seq, frames)
        if self.budget.used > self.budget.limit:
            self.budget.trim([(s.log, s.watched) for s in self.sessions.values()])
        if session.watched:
            with contextlib.suppress(zmq.Again):  # a full subscriber repairs by replay
                self.pub.send_multipart(protocol.published(session.id, frames), zmq.NOBLOCK)

    def _release_an_unwatched_session(self) -> bool:
        """At capacity: the idle session nobody has watched the longest makes
        room (its page went away; it starts afresh when it comes back)."""
        candidates = [s for s in self.sessions.values() if not s.watched
                      and s.state is State.IDLE and not s.queue]
        if not candidates:
            return False
        oldest = min(candidates, key=lambda s: s.unwatched_since)
        self._kill(oldest, "released")  # DEAD now: it no longer counts; reaped later
        return True

    def _replay(self, session: Session, identity: bytes, after: int, re: str) -> None:
        """What the session said after ``after`` (as it was said), then
        ``replayed``: where its log starts now, and its cells' latest runs."""
        for _, frames in session.log.after(after):
            self._send(identity, frames)
        self._send(identity, protocol.reply("replayed", re, session=session.id,
                                            first=session.log.first, last=session.seq,
                                            cells=session.log.cell_list(),
                                            layout=session.log.layout,
                                            owner=session.browser))

    def _read_subscriptions(self) -> None:
        """XPUB tells the first subscription to a topic and the last one going
        (a subscriber that disconnects unsubscribes from all it had)."""
        for _ in range(1000):
            try:
                event = self.pub.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            session = self.sessions.get(event[1:].decode(errors="replace"))
            if session is not None and event[:1] in (b"\x00", b"\x01"):
                session.watched = event[:1] == b"\x01"
                if session.watched:
                    session.release_at = None  # a page is back
                    # From here on the subscriber gets everything: the mark says
                    # where the session is, so it can replay what came before.
                    with contextlib.suppress(zmq.Again):
                        self.pub.send_multipart(protocol.published(session.id, protocol.event(
                            "watched", session.id, session.seq)), zmq.NOBLOCK)
                else:
                    session.unwatched_since = time.monotonic()

    def _finish_execution(self, session: Session, status: str) -> None:
        execution = session.current
        if execution.timed_out:
            status = "timeout"
        elif execution.cut:
            status = "limit"
        self._emit(session, "done", {"status": status})
        if execution.cell and execution.interact is None:
            session.log.done(execution.cell, execution.id, status)
        session.current = None
        self.running.discard(session)
        session.last_active = time.monotonic()
        if session.state is not State.DEAD:
            session.set_state(State.IDLE)
            self._next(session)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = self.system.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            session = self.by_pid.pop(pid, None)
            if session is not None:
                session.exit_status = status
                self._finish_dead(session, notify=True)

    def _finish_dead(self, session: Session, notify: bool) -> None:
        """The child is gone: deliver what it sent, close its execution, clean up."""
        if session.owner not in self.parked:
            self._read_child(session, limit=4 << 20)  # what it sent before it died
        if session.state is not State.DEAD:
            session.set_state(State.DEAD)
        if session.report is not None:  # it died while being set up
            with contextlib.suppress(OSError):
                session.report_data += os.read(session.report, 4096)
            result = sandbox.outcome(session.report_data)
            self._forget_report(session)
            if result != "ready":
                session.failure = session.failure or result.removeprefix("error ")
        killed_by = sandbox.signal_of(session.exit_status, self.settings.sandbox.full)
        if session.group is not None:
            if session.group.out_of_memory() and not session.limit_note:
                session.limit_note = (f"Memory limit of {self._memory_mb()} MB (all of the "
                                      "session's processes and files) reached: the session "
                                      "was stopped.")
            self.groups_to_remove.append(session.group)
        pending = ([session.current] if session.current else []) + list(session.queue)
        for execution in pending:
            session.current = execution
            outcome, text = self._why_it_ended(session, execution, killed_by)
            self._emit(session, "notice", {"text": text})
            self._finish_execution(session, outcome)
        session.queue.clear()
        self.watch_changed = True
        if self.sessions.get(session.id) is session:
            del self.sessions[session.id]
            self.budget.used -= session.log.bytes
            self.ended[session.id] = session.end_reason or "crashed"
            logline.say(f"session ended ({self.ended[session.id]})", session=session.id)
            while len(self.ended) > ENDED_KEPT:
                self.ended.popitem(last=False)
        if session in self.spares:
            self.spares.remove(session)
            self.refill_due = True
            notify = False
        self.by_pid.pop(session.pid, None)
        session.sock.close()
        if session.workdir is not None:
            shutil.rmtree(session.workdir, ignore_errors=True)
        if notify and session.owner:
            limited = killed_by == signal.SIGXCPU or session.limit_note
            reason = session.end_reason or ("limit" if limited else "crashed")
            seq = session.next_seq()
            frames = protocol.event("session_ended", session.id, seq, reason=reason)
            self._send(session.owner, frames)
            self._record(session, seq, frames)

    def _why_it_ended(self, session: Session, execution: Execution,
                      killed_by: int | None) -> tuple[str, str]:
        """(status, notice) of an execution whose session died under it."""
        if session.failure:
            return "killed", f"The session could not be started confined ({session.failure})."
        if session.limit_note:
            return "limit", session.limit_note
        if killed_by == signal.SIGXCPU:
            return "limit", "CPU time limit reached: the session was stopped."
        if execution.timed_out:
            return "timeout", ("Time limit reached: the execution did not stop when "
                               "interrupted and was killed.")
        if execution.cut:
            return "limit", "A limit was reached: the session was stopped."
        return "killed", "The session's process ended" + (
            f" (signal {killed_by})." if killed_by else ".")

    def _memory_mb(self) -> int:
        limits = self.settings.limits
        return limits.memory_mb + limits.disk_mb

    def _check_groups(self, now: float) -> None:
        """Once a second, from each session's cgroup: its CPU time in all
        (cpu_seconds), and CPU used while nothing runs (a session that said it
        was done and goes on computing escapes wall_time: not for long)."""
        limits = self.settings.limits
        for session in list(self.sessions.values()):
            if session.group is None or session.state is State.DEAD:
                continue
            used = session.group.cpu_seconds()
            if used > limits.cpu_seconds:
                session.limit_note = (f"CPU time limit of {limits.cpu_seconds} s (all of the "
                                      "session's processes) reached: the session was stopped.")
                self._kill(session, "limit")
            elif session.state is State.IDLE:
                if session.idle_cpu is None:
                    session.idle_cpu = used
                elif used - session.idle_cpu > limits.wall_time:
                    session.limit_note = ("The session went on computing after its cell "
                                          f"ended, past the {limits.wall_time:g} s wall time: "
                                          "it was stopped.")
                    self._kill(session, "limit")
            else:
                session.idle_cpu = None
        self.groups_to_remove = [g for g in self.groups_to_remove if not g.remove()]

    # ------------------------------------------------------------ timers

    def _poll_timeout_ms(self) -> int:
        if self.starts:
            return 0
        deadlines = [0.01 if self.refill_due or self.parked else 1.0]
        now = time.monotonic()
        for session in self.running:
            execution = session.current
            deadlines.append((execution.kill_at or execution.deadline) - now)
        return max(0, int(min(deadlines) * 1000) + 1)

    def _timers(self) -> None:
        now = time.monotonic()
        for session in list(self.running):
            execution = session.current
            if session.state is State.BUSY and now >= execution.deadline:
                execution.timed_out = True
                self._interrupt(session)
            elif session.state is State.INTERRUPTING and execution.kill_at \
                    and now >= execution.kill_at:
                self._kill(session, "killed")
        if now >= self.next_idle_check:
            self.next_idle_check = now + 1.0
            if self.cgroups is not None:
                self._check_groups(now)
            idle_timeout = self.settings.limits.idle_timeout
            for session in list(self.sessions.values()):
                if session.state is State.IDLE and not session.queue \
                        and now - session.last_active >= idle_timeout:
                    self._kill(session, "idle")
                elif not session.watched and session.state is not State.DEAD and (
                        now - session.unwatched_since >= self.settings.linger
                        or (session.release_at is not None and now >= session.release_at)):
                    self._kill(session, "left")
