"""Log a recurring problem once, then count it.

Hostile input (a session's forged messages, a rogue peer's garbage) must not
be able to fill a log, rotate away its history, or slow a loop down with
tracebacks: the first of each kind is logged whole, later ones are counted
and the count is logged at 10, 100, 1000 and 10000.
"""

from __future__ import annotations

from collections.abc import Callable

KINDS_KEPT = 1000  # distinct kinds remembered; beyond them, everything is one kind


class OncePerKind:
    def __init__(self, say: Callable[[str], None]):
        self.say = say
        self.seen: dict[str, int] = {}

    def __call__(self, kind: str, message: str) -> None:
        if kind not in self.seen and len(self.seen) >= KINDS_KEPT:
            kind = "(other kinds)"
        count = self.seen.get(kind, 0) + 1
        self.seen[kind] = count
        if count == 1:
            self.say(f"{message} (logged once; later ones are counted)")
        elif count in (10, 100, 1000, 10000):
            self.say(f"{kind}: {count} times so far")
