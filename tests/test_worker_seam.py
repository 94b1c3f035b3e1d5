"""The worker's bookkeeping between a kill and the reap, driven through its
``System`` seam: a stand-in that records kills and lets no child die, so the
moment a real child takes to die (long under load) lasts as long as the test
wants. The real-process tests are in test_worker.py and test_isolation.py."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest

from sage_worker.isolation import Sandbox
from sage_worker.limits import Limits
from sage_worker.protocol import ProtocolError
from sage_worker.server import Settings, Worker
from sage_worker.session import Session, State
from sage_worker.system import System

FAKE_PID = 999_999_999  # no such process: nothing real is ever signalled


class SlowDeaths(System):
    """Signals are recorded, never sent; no child is ever reaped."""

    def __init__(self):
        super().__init__()
        self.signalled: list[tuple[str, int, int]] = []

    def kill(self, pid: int, sig: int) -> None:
        self.signalled.append(("kill", pid, sig))

    def killpg(self, pgid: int, sig: int) -> None:
        self.signalled.append(("killpg", pgid, sig))

    def waitpid(self, pid: int, options: int) -> tuple[int, int]:
        return 0, 0


@pytest.fixture
def worker(tmp_path: Path):
    settings = Settings(endpoint="inproc://unused", name="seam",
                        sandbox=Sandbox("none", Limits(), tmp_path), uid_range=None)
    made = Worker(settings, engine=None, system=SlowDeaths())
    sockets: list[socket.socket] = []
    yield made, sockets
    for sock in sockets:
        sock.close()
    made.router.close(linger=0)
    made.pub.close(linger=0)
    made.zap.close(linger=0)
    made.context.term()


def _session(worker: Worker, sockets: list[socket.socket], owner: bytes) -> Session:
    ours, theirs = socket.socketpair()
    sockets += [ours, theirs]
    session = Session(f"s{len(worker.sessions)}", FAKE_PID + len(worker.sessions), ours,
                      owner, None, None, time.monotonic())
    worker.sessions[session.id] = session
    worker.by_pid[session.pid] = session
    return session


def test_a_claimed_away_session_says_why_before_its_child_is_reaped(worker):
    made, sockets = worker
    kept, dropped = _session(made, sockets, b"client"), _session(made, sockets, b"client")
    assert made._claim(b"client", {kept.id}) == 1
    assert ("kill", dropped.pid, signal.SIGKILL) in made.system.signalled
    assert made.sessions[dropped.id].state is State.DEAD  # killed, not yet reaped
    with pytest.raises(ProtocolError) as refused:
        made._handle(b"client", {"type": "execute", "id": "r1", "session": dropped.id,
                                 "execution": "x", "code": "1"})
    assert (refused.value.code, refused.value.message) == ("ended", "abandoned")


def test_a_session_never_known_is_no_such_session(worker):
    made, _sockets = worker
    with pytest.raises(ProtocolError) as refused:
        made._handle(b"client", {"type": "execute", "id": "r1", "session": "nobody",
                                 "execution": "x", "code": "1"})
    assert refused.value.code == "no_such_session"
