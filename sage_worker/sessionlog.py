"""A session's numbered message log and its cells' state, kept by the worker.

Sessions belong to the compute side: whatever frontend serves a browser, the
worker holds what the session said (every message, numbered by ``seq``) and
which run each cell had last, so a frontend that restarts or fails over
loses nothing. A frontend asks for what it missed with ``replay`` and for
the cells with ``replayed``'s ``cells``.

The log is bounded per session (messages and bytes; a whole execution at the
default output cap fits) and across the worker (``LogBudget``): past a bound
the oldest messages go, and a replay says where the log now starts.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

LOG_MESSAGES = 20000
LOG_BYTES = 40 << 20


@dataclass
class SessionLog:
    entries: deque = field(default_factory=deque)  # (seq, frames), oldest first
    bytes: int = 0
    cells: dict[str, dict] = field(default_factory=dict)  # cell -> its latest run
    # The worksheet as its page last arranged it ([{cell, code}], run or not):
    # None until a page says. Bounded by the request size that brought it.
    layout: list[dict] | None = None

    @property
    def first(self) -> int:
        """The oldest seq still kept (the next one, when the log is empty)."""
        return self.entries[0][0] if self.entries else 0

    def append(self, seq: int, frames: list[bytes]) -> int:
        """Keep one message; returns the change in bytes held."""
        size = sum(map(len, frames))
        self.entries.append((seq, frames))
        before = self.bytes
        self.bytes += size
        while len(self.entries) > 1 and (len(self.entries) > LOG_MESSAGES
                                         or self.bytes > LOG_BYTES):
            self.drop_oldest()
        return self.bytes - before

    def drop_oldest(self) -> int:
        _, frames = self.entries.popleft()
        size = sum(map(len, frames))
        self.bytes -= size
        return size

    def after(self, seq: int) -> list[tuple[int, list[bytes]]]:
        return [entry for entry in self.entries if entry[0] > seq]

    # -- cells: the latest run of each, for a page that attaches

    def queued(self, cell: str, execution: str, code: str) -> None:
        self.cells.pop(cell, None)  # re-inserted last: cells keep the order of their runs
        self.cells[cell] = {"code": code, "execution": execution, "state": "queued"}

    def running(self, cell: str, execution: str) -> None:
        state = self.cells.get(cell)
        if state is not None and state["execution"] == execution:
            state["state"] = "running"

    def done(self, cell: str, execution: str, status: str) -> None:
        state = self.cells.get(cell)
        if state is not None and state["execution"] == execution:
            state.update(state="done", status=status)

    def cell_list(self) -> list[dict]:
        return [{"cell": cell, **state} for cell, state in self.cells.items()]


class LogBudget:
    """All sessions' logs together stay within ``limit`` bytes: when over, the
    logs of sessions nobody watches go first, then the biggest."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0

    def trim(self, logs: list[tuple[SessionLog, bool]]) -> None:
        """``logs``: each session's log and whether a frontend watches it."""
        if self.used <= self.limit:
            return
        goal = self.limit * 9 // 10
        order = sorted(logs, key=lambda item: (item[1], -item[0].bytes))
        for log, _watched in order:
            while log.entries and self.used > goal:
                self.used -= log.drop_oldest()
            if self.used <= goal:
                return
