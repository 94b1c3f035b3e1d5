"""The worker parent: a fork server behind a ZeroMQ ROUTER socket.

One thread, one poll loop over the ROUTER socket, every session's channel and
a wakeup pipe for SIGCHLD/SIGTERM. The parent is the only writer to the
socket, so it numbers every session's messages. A child is forked per session
from the preloaded engine; ``_spawn`` makes sure a child can never return into
this loop (``try/finally: os._exit``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import sys
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import zmq

from sage_worker import channel, protocol
from sage_worker.executor import Executor
from sage_worker.isolation import Isolation, ParentGone, harden
from sage_worker.limits import Limits
from sage_worker.protocol import ProtocolError
from sage_worker.session import Execution, Session, State
from sage_worker.system import System

MAX_QUEUE = 100
OUTPUT_FIELDS = {
    "stream": ("name", "text"), "result": ("data",), "image": ("mime", "size", "sha1", "width"),
    "error": ("ename", "evalue", "traceback"), "notice": ("text",), "done": ("status",),
    "interact": ("interact", "controls"),
}


@dataclass(frozen=True)
class Settings:
    endpoint: str
    name: str
    limits: Limits
    sessions_dir: Path
    uid_range: range | None  # per-session uids (root only)
    private_network: bool
    spares: int = 2  # children kept forked and ready


def log(message: str) -> None:
    """One line with its UTC time. A log sink that is gone costs the line, never
    the worker."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"{stamp}Z {message}\n")
        sys.stderr.flush()


def processes_of_uid(uid: int) -> list[int]:
    """Live processes of ``uid`` (zombies have ended; they only await a reaper)."""
    return processes_of_uids({uid})


def processes_of_uids(uids: set[int] | range) -> list[int]:
    """Live processes of any of ``uids``, in one pass over /proc."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        if int(fields.get("Uid", "-1").split()[0]) in uids and \
                not fields.get("State", "").strip().startswith("Z"):
            found.append(int(pid))
    return found


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
        self.refill_due = True
        self.stopping = False
        self.context = zmq.Context()
        self.router = self.context.socket(zmq.ROUTER)
        self.router.linger = 0
        self.router.sndhwm = 0  # never drop output: it is capped per execution instead
        self.router.rcvhwm = 0

    # ------------------------------------------------------------ lifecycle

    def bind(self) -> None:
        self.router.bind(self.settings.endpoint)

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
        poller.register(wake_read, zmq.POLLIN)
        try:
            while not self.stopping:
                for session in self.sessions.values():
                    poller.register(session.sock.fileno(), zmq.POLLIN)
                events = dict(poller.poll(self._poll_timeout_ms()))
                if not events and self.refill_due:
                    # Forking spares waits for a quiet moment: it would delay
                    # requests that are already on their way.
                    self.refill()
                for session in list(self.sessions.values()):
                    with contextlib.suppress(KeyError):
                        poller.unregister(session.sock.fileno())
                    if events.get(session.sock.fileno()):
                        self._read_child(session)
                if events.get(wake_read):
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_read, 4096)
                self._reap()
                if events.get(self.router):
                    self._read_requests()
                self._timers()
        finally:
            self.shutdown()
            signal.set_wakeup_fd(-1)
            os.close(wake_read)
            os.close(wake_write)

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
        self.context.term()
        with contextlib.suppress(OSError):
            self.settings.sessions_dir.rmdir()  # only if every session folder is gone

    def sweep_leftovers(self) -> None:
        """After a crash of a previous worker: no process of our uids, no old dirs."""
        if self.settings.uid_range is not None:
            self._kill_uids(self.settings.uid_range)
        self.settings.sessions_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.settings.sessions_dir, 0o711)
        for old in self.settings.sessions_dir.iterdir():
            shutil.rmtree(old, ignore_errors=True)

    # ------------------------------------------------------------ requests

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
                self.say(f"internal error: {traceback.format_exc()}")
                self._send(identity, protocol.error(ProtocolError(
                    "internal", f"internal error: {type(exc).__name__}: {exc}")))

    def _handle(self, identity: bytes, request: dict) -> None:
        kind, re = request["type"], request["id"]
        if kind == "ping":
            self._send(identity, protocol.reply("pong", re, **self.status()))
            return
        if kind == "start":
            session = self._start(identity, re)
            self._send(identity, protocol.reply("started", re, session=session.id,
                                                pid=session.pid))
            return
        session = self.sessions.get(request["session"])
        if session is None or session.state is State.DEAD:
            raise ProtocolError("no_such_session",
                                f"no session {request['session']!r} on this worker", re)
        if kind == "execute":
            self._execute(session, identity, request, re)
        elif kind == "interrupt":
            self._interrupt(session)
            self._send(identity, protocol.reply("interrupting", re, session=session.id))
        elif kind == "restart":
            session = self._restart(session, identity, re)
            self._send(identity, protocol.reply("restarted", re, session=session.id,
                                                pid=session.pid))
        elif kind == "interact":
            self._execute(session, identity, request, re)
        elif kind == "end":
            self._kill(session, "ended")
            self._send(identity, protocol.reply("ended", re, session=session.id))

    def status(self) -> dict:
        limits = self.settings.limits
        busy = sum(s.state is not State.IDLE for s in self.sessions.values())
        return {"name": self.settings.name, "engine": self.engine.name, "pid": os.getpid(),
                "sessions": len(self.sessions), "busy": busy, "spares": len(self.spares),
                "load": round(len(self.sessions) / limits.max_sessions, 3),
                "limits": dataclasses.asdict(limits)}

    def _send(self, identity: bytes, frames: list[bytes]) -> None:
        try:
            self.router.send_multipart([identity, *frames])
        except zmq.ZMQError as exc:
            self.say(f"could not send to a client: {exc}")

    # ------------------------------------------------------------ sessions

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
               seq: int = 0) -> Session:
        """Hand out a spare child (forked and hardened ahead of time), or fork one."""
        limits = self.settings.limits
        live = sum(s.state is not State.DEAD for s in self.sessions.values())
        if session_id is None and live >= limits.max_sessions:
            raise ProtocolError("busy", f"worker {self.settings.name} is at its limit of "
                                f"{limits.max_sessions} sessions; use another worker", re)
        session = self.spares.popleft() if self.spares else self._fork_session()
        if session is None:
            raise ProtocolError("busy", "no free session uid on this worker", re)
        session.id = session_id or session.id
        session.owner = identity
        session.seq = seq
        session.last_active = time.monotonic()
        self.sessions[session.id] = session
        self.refill_due = True
        return session

    def _fork_session(self) -> Session | None:
        uid = self._free_uid()
        if self.settings.uid_range is not None and uid is None:
            return None
        session_id = uuid.uuid4().hex
        workdir = self.settings.sessions_dir / session_id
        workdir.mkdir(mode=0o700)
        if uid is not None:
            os.chown(workdir, uid, uid)
        pid, sock = self._spawn(workdir, uid)
        session = Session(session_id, pid, sock, b"", uid, workdir, time.monotonic())
        self.by_pid[pid] = session
        return session

    def refill(self) -> None:
        """Keep ``spares`` children ready, so that a new session costs no fork."""
        self.refill_due = False
        while len(self.spares) < self.settings.spares:
            spare = self._fork_session()
            if spare is None:
                return
            self.spares.append(spare)

    def _spawn(self, workdir: Path, uid: int | None) -> tuple[int, socket.socket]:
        parent_end, child_end = channel.pair()
        parent_pid = os.getpid()
        pid = self.system.fork()
        if pid == 0:
            code = 70
            try:
                self._child(child_end, workdir, uid, parent_pid)
                code = 0
            except ParentGone:
                code = 0
            except BaseException:
                with contextlib.suppress(BaseException):
                    os.write(2, traceback.format_exc().encode())
            finally:
                os._exit(code)
        child_end.close()
        return pid, parent_end

    def _child(self, child_end: socket.socket, workdir: Path, uid: int | None,
               parent_pid: int) -> None:
        """Runs in the forked child; returns only when the parent goes away."""
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        self.system.setsid()
        self.system.set_parent_death_signal(signal.SIGKILL)
        isolation = Isolation(workdir, uid, self.settings.private_network,
                              self.settings.limits)
        harden(self.system, isolation, {child_end.fileno()}, parent_pid,
               {"MPLBACKEND": "Agg"})
        self.engine.reseed()
        executor = Executor(channel.ChildEnd(child_end), self.engine,
                            self.settings.limits.output_bytes, self.system.flush_c_stdio)
        executor.serve()

    def _execute(self, session: Session, identity: bytes, request: dict, re: str) -> None:
        if len(session.queue) >= MAX_QUEUE:
            raise ProtocolError("queue_full", f"{MAX_QUEUE} executions are already waiting "
                                "in this session", re)
        session.queue.append(Execution(identity, request["execution"], request.get("code"),
                                       request.get("interact"), request.get("values")))
        session.owner = identity
        self._next(session)

    def _next(self, session: Session) -> None:
        if session.state is not State.IDLE or not session.queue:
            return
        execution = session.queue.popleft()
        execution.deadline = time.monotonic() + self.settings.limits.wall_time
        session.current = execution
        session.set_state(State.BUSY)
        try:
            if execution.interact is None:
                request = {"op": "execute", "execution": execution.id, "code": execution.code}
            else:
                request = {"op": "interact", "execution": execution.id,
                           "interact": execution.interact, "values": execution.values}
            session.sock.sendall(channel.encode(request))
        except (BlockingIOError, OSError):
            # The child is gone or not reading: it is killed and reported.
            self._kill(session, "killed")

    def _interrupt(self, session: Session) -> None:
        if session.state is not State.BUSY:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            self.system.killpg(session.pid, signal.SIGINT)
        session.set_state(State.INTERRUPTING)
        session.current.kill_at = time.monotonic() + self.settings.limits.interrupt_grace

    def _restart(self, old: Session, identity: bytes, re: str) -> Session:
        self._kill(old, "restarted")
        self._finish_dead(old, notify=False)
        return self._start(identity, re, session_id=old.id, seq=old.seq)

    def _kill(self, session: Session, reason: str) -> None:
        """End a session now: its process group, and as root every process of its uid."""
        if session.state is not State.DEAD:
            session.set_state(State.DEAD)
        session.end_reason = session.end_reason or reason
        with contextlib.suppress(ProcessLookupError, PermissionError):
            self.system.killpg(session.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self.system.kill(session.pid, signal.SIGKILL)
        if session.uid is not None:
            self._kill_uid(session.uid)

    def _kill_uid(self, uid: int) -> None:
        self._kill_uids({uid})

    def _kill_uids(self, uids: set[int] | range) -> None:
        """SIGKILL every process of these uids until none is left (new ones may
        appear while a fork loop runs: so, again and again, for a bounded time)."""
        for _ in range(50):
            pids = processes_of_uids(uids)
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    self.system.kill(pid, signal.SIGKILL)
            time.sleep(0.005)
        self.say(f"warning: processes survived SIGKILL: {processes_of_uids(uids)}")

    # ------------------------------------------------------------ children

    def _read_child(self, session: Session) -> None:
        try:
            messages, _closed = channel.read_available(session.sock, session.decoder)
        except ValueError as exc:
            self.say(f"session {session.id}: bad channel data ({exc}); killing it")
            self._kill(session, "killed")
            return
        for message, blob in messages:
            self._forward(session, message, blob)

    def _forward(self, session: Session, message: dict, blob: bytes | None) -> None:
        execution = session.current
        kind = message.get("kind")
        if execution is None or kind not in OUTPUT_FIELDS:
            return
        fields = {k: message.get(k) for k in OUTPUT_FIELDS[kind]}
        if "interact" in message:
            fields["interact"] = message["interact"]
        if kind == "done":
            if execution.timed_out:
                fields["status"] = "timeout"
            if fields["status"] not in protocol.DONE_STATUSES:
                fields["status"] = "error"
        self._send(execution.owner, protocol.output(kind, session.id, execution.id,
                                                    session.next_seq(), blob, **fields))
        if kind == "done":
            session.current = None
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
        with contextlib.suppress(ValueError):
            messages, _ = channel.read_available(session.sock, session.decoder)
            for message, blob in messages:
                self._forward(session, message, blob)
        if session.state is not State.DEAD:
            session.set_state(State.DEAD)
        status = session.exit_status
        killed_by = os.WTERMSIG(status) if status is not None and os.WIFSIGNALED(status) \
            else None
        pending = ([session.current] if session.current else []) + list(session.queue)
        for execution in pending:
            session.current = execution
            outcome = "killed"
            if execution.timed_out:
                outcome = "timeout"
            elif killed_by == signal.SIGXCPU:
                outcome = "limit"
            text = {"limit": "CPU time limit reached: the session was stopped.",
                    "timeout": "Time limit reached: the execution did not stop when "
                               "interrupted and was killed.",
                    }.get(outcome, "The session's process ended"
                          + (f" (signal {killed_by})." if killed_by else "."))
            self._forward(session, {"kind": "notice", "text": text}, None)
            self._forward(session, {"kind": "done", "status": outcome}, None)
        session.queue.clear()
        if self.sessions.get(session.id) is session:
            del self.sessions[session.id]
        if session in self.spares:
            self.spares.remove(session)
            self.refill_due = True
            notify = False
        self.by_pid.pop(session.pid, None)
        session.sock.close()
        if session.uid is not None and session.end_reason is None:
            # It died by itself: its uid's other processes may still run.
            # (_kill already swept the uid when we ended it.)
            self._kill_uid(session.uid)
        shutil.rmtree(session.workdir, ignore_errors=True)
        if notify and session.owner:
            reason = session.end_reason or ("limit" if killed_by == signal.SIGXCPU
                                            else "crashed")
            self._send(session.owner, protocol.event("session_ended", session.id,
                                                     session.next_seq(), reason=reason))

    # ------------------------------------------------------------ timers

    def _poll_timeout_ms(self) -> int:
        deadlines = [0.01 if self.refill_due else 1.0]
        now = time.monotonic()
        for session in self.sessions.values():
            execution = session.current
            if execution is not None:
                deadlines.append((execution.kill_at or execution.deadline) - now)
        return max(0, int(min(deadlines) * 1000) + 1)

    def _timers(self) -> None:
        now = time.monotonic()
        limits = self.settings.limits
        for session in list(self.sessions.values()):
            execution = session.current
            if session.state is State.BUSY and execution and now >= execution.deadline:
                execution.timed_out = True
                self._interrupt(session)
            elif session.state is State.INTERRUPTING and execution and execution.kill_at \
                    and now >= execution.kill_at:
                self._kill(session, "killed")
            elif session.state is State.IDLE and not session.queue \
                    and now - session.last_active >= limits.idle_timeout:
                self._kill(session, "idle")
