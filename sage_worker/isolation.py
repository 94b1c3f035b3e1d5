"""How a session is confined, and the last steps inside the session process.

``Sandbox`` says what the worker applies; ``harden`` runs in the session
process right before user code, in the order that keeps each step possible:
close inherited descriptors and scrub the environment; drop groups, gid,
uid; NO_NEW_PRIVS; then the rlimits. The namespaces and the file-system view
come before, from the session's init (``sage_worker.sandbox``).

Isolation is all or nothing: ``full`` needs root (namespaces, mounts, uids)
and a worker that cannot apply it stops with an ``IsolationError`` naming the
fix; running without it takes ``isolation = none``, said explicitly.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
from dataclasses import dataclass
from pathlib import Path

from sage_worker.limits import Limits
from sage_worker.system import System

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
MODES = ("full", "none")


class IsolationError(Exception):
    """Sessions cannot be confined as configured; the message names the fix."""


@dataclass(frozen=True)
class Sandbox:
    mode: str  # "full": per-session uid and namespaces; "none": rlimits only
    limits: Limits
    sessions_dir: Path  # full: every session's home mount point; none: parent of their folders
    private_network: bool = True
    install: tuple[Path, ...] = ()  # folders a session must be able to read

    @property
    def full(self) -> bool:
        return self.mode == "full"

    def describe(self) -> dict:
        """What the worker actually applies (its pong and startup line say it)."""
        if not self.full:
            return {"mode": "none", "uid": "shared", "namespaces": [], "network": "shared",
                    "filesystem": "shared", "disk_quota": None}
        return {"mode": "full", "uid": "per-session",
                "namespaces": ["mount", "pid", "ipc", "uts"]
                + (["network"] if self.private_network else []),
                "network": "none" if self.private_network else "shared",
                "filesystem": "private /tmp, /var/tmp, /dev/shm and home; /root and /home "
                              "hidden",
                "disk_quota": {"mb": self.limits.disk_mb, "files": self.limits.disk_files}}


def close_inherited_fds(keep: set[int]) -> None:
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    # closerange uses the close_range system call: no listing of /proc/self/fd.
    start = 3
    for fd in sorted(keep):
        os.closerange(start, fd)
        start = fd + 1
    os.closerange(start, os.sysconf("SC_OPEN_MAX"))


def scrub_environment(home: Path, engine_env: dict[str, str]) -> None:
    """Nothing of the worker's environment (DSN, keys, tokens) reaches user code."""
    os.environ.clear()
    os.environ.update(PATH=SAFE_PATH, HOME=str(home), TMPDIR="/tmp", LANG="C.UTF-8",
                      LC_ALL="C.UTF-8", **engine_env)


def address_space_in_use() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def apply_rlimits(system: System, limits: Limits, uid_switched: bool) -> None:
    mb = 1 << 20
    system.setrlimit(resource.RLIMIT_CORE, 0, 0)
    system.setrlimit(resource.RLIMIT_CPU, limits.cpu_seconds, limits.cpu_seconds + 5)
    memory = address_space_in_use() + limits.memory_mb * mb
    system.setrlimit(resource.RLIMIT_AS, memory, memory)
    # Writing past the file size limit then fails with EFBIG instead of killing.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    system.setrlimit(resource.RLIMIT_FSIZE, limits.file_size_mb * mb, limits.file_size_mb * mb)
    system.setrlimit(resource.RLIMIT_NOFILE, limits.open_files, limits.open_files)
    if uid_switched:
        # Counted per real uid: a session's own, so this is per session.
        system.setrlimit(resource.RLIMIT_NPROC, limits.processes, limits.processes)


def harden(system: System, limits: Limits, uid: int | None, home: Path, keep_fds: set[int],
           engine_env: dict[str, str]) -> None:
    """The session process's last steps before user code: after them it holds
    no descriptor, variable, privilege or capability of the worker's."""
    close_inherited_fds(keep_fds)
    scrub_environment(home, engine_env)
    os.chdir(home)
    if uid is not None:
        system.setgroups([])
        system.setgid(uid)
        system.setuid(uid)  # from root: every capability goes with it
    system.no_new_privileges()
    apply_rlimits(system, limits, uid_switched=uid is not None)


def check_readable(paths: list[Path]) -> list[str]:
    """Of ``paths``, those this (session) process cannot list."""
    bad = []
    for path in paths:
        with contextlib.suppress(OSError):
            os.listdir(path)
            continue
        bad.append(str(path))
    return bad
