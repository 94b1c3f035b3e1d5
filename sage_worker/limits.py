"""Per-session limits, their defaults and what each one means.

Defaults suit a public server: generous for real work, small enough that one
user cannot take the host down. salvusctl renders each from the config onto
the worker's command line.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Limits:
    # Sessions one worker runs at once; beyond it "start" gets a busy error.
    max_sessions: int = 32
    # Seconds one execution may run before it is interrupted (done: timeout).
    wall_time: float = 60.0
    # Seconds a session may sit without executing before it is ended.
    idle_timeout: float = 1800.0
    # CPU seconds a session may use in all (RLIMIT_CPU; done: limit).
    cpu_seconds: int = 600
    # Address space (MB) a session may add beyond the preloaded engine
    # (RLIMIT_AS; a MemoryError, done: limit).
    memory_mb: int = 2048
    # Processes per session uid (RLIMIT_NPROC; only with per-session uids).
    processes: int = 64
    # Largest file (MB) a session may write (RLIMIT_FSIZE; done: limit).
    file_size_mb: int = 64
    # Open file descriptors per process (RLIMIT_NOFILE; done: limit).
    open_files: int = 256
    # Bytes of stdout+stderr per execution; beyond it one notice, the rest is
    # dropped and the code interrupted (done: limit).
    output_bytes: int = 16 << 20
    # Seconds an interrupted execution may take to stop before it is killed.
    interrupt_grace: float = 3.0
    # A session's own files (home, /tmp, /var/tmp, /dev/shm together): MB and
    # number of files. They live in memory (tmpfs) and go with the session.
    disk_mb: int = 256
    disk_files: int = 10000

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        for f in fields(cls):
            parser.add_argument("--" + f.name.replace("_", "-"), type=type(f.default),
                                default=f.default, metavar="N")

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> Limits:
        values = {f.name: getattr(args, f.name) for f in fields(cls)}
        for name, value in values.items():
            if value <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive")
        return cls(**values)

    def describe(self) -> str:
        return " ".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self))
