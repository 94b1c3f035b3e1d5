"""Hardening of a session child, in the order that keeps each step possible.

As root: close inherited descriptors and scrub the environment; a private
network namespace; drop groups, gid, uid; NO_NEW_PRIVS; re-arm the parent-
death signal (a uid change clears it) and check the parent is still there;
then the rlimits. Without root the uid and network steps are skipped (the
worker's startup log says so) and RLIMIT_NPROC is not set, since it would
count every process of the shared user.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import stat
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from sage_worker.limits import Limits
from sage_worker.system import System

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class Isolation:
    workdir: Path
    uid: int | None  # None: stay the worker's user
    private_network: bool
    limits: Limits


class ParentGone(Exception):
    pass


def cgroup_v2_controllers() -> set[str]:
    """Controllers the host's cgroup v2 hierarchy offers (empty: none, or v1 only)."""
    for root in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        with contextlib.suppress(OSError):
            return set(Path(root, "cgroup.controllers").read_text().split())
    return set()


def unreadable_for_sessions() -> list[str]:
    """Folders of this Python installation that a session uid could not read.

    Session uids are in no group and own nothing, so only the "other" bits
    count; a stdlib under /root (a pyenv build, say) makes lazy imports fail.
    """
    paths = {os.path.dirname(os.__file__), *sysconfig.get_paths().values(), *sys.path}
    bad = []
    for text in sorted(p for p in paths if p and os.path.isdir(p)):
        path = Path(text)
        for folder in [*reversed(path.parents), path]:
            need = stat.S_IXOTH | (stat.S_IROTH if folder == path else 0)
            if folder.stat().st_mode & need != need:
                bad.append(str(folder))
                break
    return sorted(set(bad))


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


def scrub_environment(workdir: Path, engine_env: dict[str, str]) -> None:
    """Nothing of the worker's environment (DSN, keys, tokens) reaches user code."""
    os.environ.clear()
    os.environ.update(PATH=SAFE_PATH, HOME=str(workdir), TMPDIR=str(workdir),
                      LANG="C.UTF-8", LC_ALL="C.UTF-8", **engine_env)


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
        system.setrlimit(resource.RLIMIT_NPROC, limits.processes, limits.processes)


def harden(system: System, isolation: Isolation, keep_fds: set[int], parent_pid: int,
           engine_env: dict[str, str]) -> None:
    close_inherited_fds(keep_fds)
    scrub_environment(isolation.workdir, engine_env)
    os.chdir(isolation.workdir)
    if isolation.uid is not None:
        if isolation.private_network:
            system.private_network()
        system.setgroups([])
        system.setgid(isolation.uid)
        system.setuid(isolation.uid)
    system.no_new_privileges()
    system.set_parent_death_signal(signal.SIGKILL)
    if system.getppid() != parent_pid:
        raise ParentGone()
    apply_rlimits(system, isolation.limits, uid_switched=isolation.uid is not None)
