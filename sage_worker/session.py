"""The parent's record of one session child, with named, guarded states."""

from __future__ import annotations

import enum
import socket
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from sage_worker.cgroups import Group
from sage_worker.channel import Decoder
from sage_worker.sessionlog import SessionLog


class State(enum.Enum):
    IDLE = "idle"  # waiting for an execution
    BUSY = "busy"  # running one
    INTERRUPTING = "interrupting"  # SIGINT sent; waiting for done, then kill
    DEAD = "dead"  # killed or exited; waiting to be reaped


ALLOWED = {
    State.IDLE: {State.BUSY, State.DEAD},
    State.BUSY: {State.IDLE, State.INTERRUPTING, State.DEAD},
    State.INTERRUPTING: {State.IDLE, State.DEAD},
    State.DEAD: set(),
}


@dataclass
class Execution:
    owner: bytes  # ZeroMQ identity that asked for it and receives its output
    id: str
    code: str | None
    interact: str | None = None  # an interact's re-run: its id and the control values
    values: dict | None = None
    cursor: int | None = None  # a completion of the code at this position, not a run
    options: dict = field(default_factory=dict)  # execute's typeset and language
    cell: str | None = None  # the page's cell it runs (its messages carry it)
    direct: bool = True  # its output goes to the asker too (False: it watches the publisher)
    deadline: float = 0.0  # wall-time limit (monotonic)
    timed_out: bool = False
    kill_at: float | None = None  # when an interrupt that did not work turns into a kill
    output: int = 0  # bytes forwarded, counted by the parent against the output cap
    cut: bool = False  # the cap was reached: the rest is dropped, done says limit
    malformed: bool = False  # the session sent a message that failed validation


@dataclass(eq=False)
class Session:
    id: str
    pid: int
    sock: socket.socket
    owner: bytes
    uid: int | None
    workdir: Path | None  # its folder on the host (isolation none); None: in its namespace
    last_active: float
    seq: int = 0
    state: State = State.IDLE
    current: Execution | None = None
    queue: deque = field(default_factory=deque)
    decoder: Decoder = field(default_factory=Decoder)
    end_reason: str | None = None  # why we killed it, if we did
    exit_status: int | None = None  # from waitpid, once reaped
    restarted_at: float = float("-inf")  # when it was last restarted
    stray: int = 0  # bytes it sent while nothing ran (a well-behaved one sends none)
    report: int | None = None  # its setup report's pipe, until it said ready (or failed)
    report_data: bytes = b""
    failure: str | None = None  # why it could not be confined
    group: Group | None = None  # its cgroup, where the host has them
    limit_note: str | None = None  # which of its limits ended it, said to its user
    idle_cpu: float | None = None  # its CPU time when it was last seen idle
    log: SessionLog = field(default_factory=SessionLog)  # what it said, for replays
    watched: bool = False  # a frontend subscribes to its messages
    unwatched_since: float = 0.0  # when the last frontend stopped watching (monotonic)
    release_at: float | None = None  # its page left for good: end then, if still unwatched
    browser: str = ""  # who may open it (start's owner)

    def set_state(self, new: State) -> None:
        if new not in ALLOWED[self.state]:
            raise RuntimeError(f"session {self.id}: {self.state.name} -> {new.name} not allowed")
        self.state = new

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq
