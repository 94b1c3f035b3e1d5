"""Processes of a data folder that outlived their supervisord.

supervisord puts ``SALVUS_INSTANCE=<instance>`` into the environment of every
program it starts (see supervisord.conf.in), and their children inherit it,
so after a supervisord crash its leftovers are found by that mark rather than
by guessing from names; the admin's own shell never carries it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable

MARK = "SALVUS_INSTANCE"
HOST_MARK = "SALVUS_HOST"


def _read(pid: str, name: str) -> bytes:
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read()
    except OSError:
        return b""


def find(instance: str, host: str | None = None) -> dict[int, str]:
    """pid -> command line of every live process carrying this instance's mark
    (and, when ``host`` is given, that host's: the folders of several hosts of
    one appliance may share a machine)."""
    marks = {f"{MARK}={instance}".encode()}
    if host is not None:
        marks.add(f"{HOST_MARK}={host}".encode())
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        if marks <= set(_read(pid, "environ").split(b"\0")):
            cmdline = _read(pid, "cmdline").replace(b"\0", b" ").decode(errors="replace")
            if cmdline:  # a zombie has none and has already ended
                found[int(pid)] = cmdline.strip()
    return found


def _is_postmaster(cmdline: str) -> bool:
    parts = cmdline.split()
    return bool(parts) and os.path.basename(parts[0]) == "postgres" and "-D" in parts


def terminate(instance: str, say: Callable[[str], None], grace: float = 15.0,
              host: str | None = None) -> int:
    """Stop every leftover: SIGINT to PostgreSQL (its fast shutdown), SIGTERM to
    the rest, SIGKILL to whatever is still there after ``grace`` seconds."""
    found = find(instance, host)
    if not found:
        return 0
    say(f"supervisord is gone but {len(found)} of its processes still run; stopping them: "
        + ", ".join(str(pid) for pid in sorted(found)))
    for pid, cmdline in found.items():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT if _is_postmaster(cmdline) else signal.SIGTERM)
    deadline = time.monotonic() + grace
    while find(instance, host) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in find(instance, host):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while find(instance, host) and time.monotonic() < deadline:
        time.sleep(0.1)
    return len(found)
