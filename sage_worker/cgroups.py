"""Per-session cgroups: memory, processes and CPU time counted for a session as
a whole, not per process.

rlimits count per process: four children of 1.5 GB each pass a 2 GB memory
limit, and each child starts its CPU clock at zero. Where the host offers
cgroups (v1 controllers mounted under /sys/fs/cgroup/<controller>, or the
v2 unified hierarchy with memory and pids), each session gets its own group:
``memory`` caps what all its processes hold (its tmpfs files included),
``pids`` how many it runs, and its CPU time is read from the group, so the
worker can end a session that passes ``cpu_seconds`` in all, or that goes on
computing once it said it was done. Where there are none, the worker says so
and the rlimits are what holds.

The worker makes each group and removes it; the session's init enters it
before it forks anything, so every process of the session is in it.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
V1_CONTROLLERS = ("memory", "pids", "cpuacct")


def _read(path: Path) -> str:
    """A small control file's text. The worker reads every session's CPU time
    once a second: plain os calls cost a fraction of Path.read_text's."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 4096).decode()
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Group:
    """One session's cgroup: a folder per v1 controller, or one v2 folder
    (under the key "")."""

    folders: dict[str, Path]

    @property
    def v2(self) -> bool:
        return "" in self.folders

    def enter(self) -> None:
        """Move the calling process (and so all it forks) into the group."""
        for folder in self.folders.values():
            (folder / "cgroup.procs").write_text("0\n")

    def _file(self, v1_controller: str, name: str) -> Path:
        return self.folders["" if self.v2 else v1_controller] / name

    def cpu_seconds(self) -> float:
        """CPU time all its processes used, in seconds."""
        try:
            if self.v2:
                stat = _read(self._file("cpu", "cpu.stat")).split()
                return int(stat[stat.index("usage_usec") + 1]) / 1e6
            return int(_read(self._file("cpuacct", "cpuacct.usage"))) / 1e9
        except (OSError, ValueError):
            return 0.0

    def out_of_memory(self) -> bool:
        """Whether the kernel killed one of its processes for the memory limit."""
        name = "memory.events" if self.v2 else "memory.oom_control"
        with contextlib.suppress(OSError, ValueError):
            fields = self._file("memory", name).read_text().split()
            return int(fields[fields.index("oom_kill") + 1]) > 0
        return False

    def remove(self) -> bool:
        """Remove the group; False while some process is still in it."""
        done = True
        for folder in self.folders.values():
            try:
                folder.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                done = False
        return done


class Cgroups:
    """The groups of one worker's sessions, under ``salvus/<worker>``."""

    def __init__(self, bases: dict[str, Path]):
        self.bases = bases  # controller (v1) or "" (v2) -> this worker's folder
        self.v2 = "" in bases

    @classmethod
    def detect(cls, worker: str) -> Cgroups | None:
        """This host's cgroups, made ready for this worker; None if there are none
        we can use."""
        name = f"{worker}.{os.getpid()}"
        v1 = [ROOT / controller for controller in V1_CONTROLLERS]
        try:
            if all((folder / "cgroup.procs").exists() for folder in v1):
                bases = {folder.name: folder / "salvus" / name for folder in v1}
                for base in bases.values():
                    base.mkdir(parents=True, exist_ok=True)
                return cls(bases)
            controllers = (ROOT / "cgroup.controllers").read_text().split()
            if not {"memory", "pids", "cpu"} <= set(controllers):
                return None
            # v2: a group has processes or children with controllers, never both,
            # so the worker's sessions live under salvus/<worker>, which has none.
            for folder in (ROOT, ROOT / "salvus", ROOT / "salvus" / name):
                folder.mkdir(exist_ok=True)
                (folder / "cgroup.subtree_control").write_text("+memory +pids +cpu\n")
            return cls({"": ROOT / "salvus" / name})
        except OSError:
            return None

    def describe(self) -> str:
        return "cgroup v2" if self.v2 else "cgroup v1"

    def create(self, session: str, memory_bytes: int, processes: int) -> Group:
        group = Group({key: base / session for key, base in self.bases.items()})
        for folder in group.folders.values():
            folder.mkdir()
        memory = "memory.max" if self.v2 else "memory.limit_in_bytes"
        group._file("memory", memory).write_text(f"{memory_bytes}\n")
        group._file("pids", "pids.max").write_text(f"{processes}\n")
        return group

    def remove(self) -> None:
        """At the worker's end: its own folders (empty by then)."""
        for base in self.bases.values():
            with contextlib.suppress(OSError):
                base.rmdir()
