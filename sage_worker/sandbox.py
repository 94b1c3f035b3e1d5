"""A session's process tree, and the namespaces it lives in.

With isolation ``full``::

    worker         a child subreaper: the session's init becomes its child
      launcher     unshare(mount, pid, ipc, uts[, network]); fork; exit
        init       pid 1 of the new pid namespace: mounts the session's file
                   system, forks the session, reaps, forwards SIGINT; when it
                   ends, the kernel kills every process of the namespace, so no
                   setsid or double-forked grandchild outlives its session
          session  its own uid, no capabilities, rlimits; runs user code

With isolation ``none`` the worker forks the session process directly.

Every step reports on a pipe that only the worker reads, one line each:
``pid N`` (the init, as the worker sees it), then ``ready`` from the session
once it is confined, or ``error TEXT`` from the step that failed. ``spawn``
returns only when the session is ready, so a session is never handed out
unconfined. Each forked level ends in ``os._exit``: no child can ever return
into the worker's code.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

from sage_worker import mounts
from sage_worker.isolation import Sandbox, check_readable, close_inherited_fds, harden
from sage_worker.system import (
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUTS,
    System,
)

REPORT_TIMEOUT = 20.0
PRIVATE_DIRS = {"tmp": Path("/tmp"), "var-tmp": Path("/var/tmp"), "shm": Path("/dev/shm")}


class SpawnError(Exception):
    """A session could not be started confined; the text says which step failed."""


def spawn(system: System, sandbox: Sandbox, uid: int | None, home: Path,
          child_end: socket.socket, lifeline: tuple[int, int],
          run: Callable[[socket.socket], None], env: dict[str, str]) -> int:
    """Start one session; return the pid the worker watches and signals (the
    init, or with isolation none the session itself)."""
    report_r, report_w = os.pipe()
    worker_pid = os.getpid()
    pid = system.fork()
    if pid == 0:
        _exit_after(report_w, lambda: _launch(system, sandbox, uid, home, child_end, report_w,
                                               lifeline, run, env, worker_pid))
    os.close(report_w)
    try:
        lines = _read_report(report_r)
    finally:
        os.close(report_r)
    watched = pid
    if sandbox.full:
        with contextlib.suppress(ChildProcessError):
            system.waitpid(pid, 0)  # the launcher has exited (its report end is closed)
        found = [int(line.split()[1]) for line in lines if line.startswith("pid ")]
        watched = found[0] if found else None
    if "ready" not in lines:
        if watched:
            with contextlib.suppress(ProcessLookupError):
                system.kill(watched, signal.SIGKILL)
        errors = [line.removeprefix("error ") for line in lines if line.startswith("error ")]
        raise SpawnError(errors[0] if errors else "the session process ended during setup")
    return watched


def _exit_after(report_w: int, step: Callable[[], int | None]) -> None:
    """Run one forked level and end the process, whatever happens."""
    code = 70
    try:
        code = step() or 0
    except BaseException as exc:
        with contextlib.suppress(BaseException):
            text = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:500]
            os.write(report_w, f"error {text}\n".encode())
    finally:
        os._exit(code)


def _read_report(fd: int) -> list[str]:
    data = b""
    deadline = time.monotonic() + REPORT_TIMEOUT
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return [*data.decode(errors="replace").splitlines(), "error setup timed out"]
        chunk = os.read(fd, 4096)
        if not chunk:
            return data.decode(errors="replace").splitlines()
        data += chunk


def _launch(system: System, sandbox: Sandbox, uid: int | None, home: Path,
            child_end: socket.socket, report_w: int, lifeline: tuple[int, int],
            run: Callable, env: dict[str, str], worker_pid: int) -> None:
    """In the first forked process."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    os.close(lifeline[1])  # only the worker may hold it: its death closes the pipe
    if not sandbox.full:
        _session(system, sandbox, None, home, child_end, report_w, run, env, worker_pid)
        return
    flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
    system.unshare(flags | (CLONE_NEWNET if sandbox.private_network else 0))
    init = system.fork()
    if init:
        os.write(report_w, f"pid {init}\n".encode())
        return
    _exit_after(report_w, lambda: _init(system, sandbox, uid, home, child_end, report_w,
                                        lifeline[0], run, env))


def _init(system: System, sandbox: Sandbox, uid: int, home: Path, child_end: socket.socket,
          report_w: int, lifeline: int, run: Callable, env: dict[str, str]) -> int:
    """Pid 1 of the session's namespace; returns its exit status."""
    system.setsid()
    close_inherited_fds({report_w, lifeline, child_end.fileno()})
    build_filesystem(system, sandbox, uid, home)
    session = system.fork()
    if session == 0:
        _exit_after(report_w, lambda: _session(system, sandbox, uid, home, child_end,
                                               report_w, run, env, None))
    os.close(report_w)
    child_end.close()
    return _reap_until(system, session, lifeline)


def build_filesystem(system: System, sandbox: Sandbox, uid: int, home: Path) -> None:
    """The session's own files on one size- and inode-limited tmpfs (its home,
    /tmp, /var/tmp, /dev/shm), the install readable, /root and /home hidden,
    and a /proc of its own pid namespace."""
    system.mount(None, "/", None, mounts.MS_REC | mounts.MS_PRIVATE, None)  # nothing leaks out
    limits = sandbox.limits
    system.mount("tmpfs", str(home), "tmpfs", mounts.MS_NOSUID | mounts.MS_NODEV,
                 f"size={limits.disk_mb}m,nr_inodes={limits.disk_files},mode=0755")
    (home / "home").mkdir(mode=0o700)
    os.chown(home / "home", uid, uid)
    for name in PRIVATE_DIRS:
        (home / name).mkdir()
        os.chmod(home / name, 0o1777)
    view = mounts.plan(
        needed={**{path: path for path in sandbox.install}, home: home / "home"},
        overlays={target: home / name for name, target in PRIVATE_DIRS.items()
                  if target.is_dir()})
    mounts.apply(system, view)
    system.mount("proc", "/proc", "proc",
                 mounts.MS_NOSUID | mounts.MS_NODEV | mounts.MS_NOEXEC, None)


def _session(system: System, sandbox: Sandbox, uid: int | None, home: Path,
             child_end: socket.socket, report_w: int, run: Callable, env: dict[str, str],
             worker_pid: int | None) -> None:
    """The session process: confine, report ready, run user code."""
    system.setsid()  # its own process group: an interrupt reaches its children too
    if worker_pid is not None:  # isolation none: no namespace ends it with the worker
        system.set_parent_death_signal(signal.SIGKILL)
        if system.getppid() != worker_pid:
            return
    harden(system, sandbox.limits, uid, home, {child_end.fileno(), report_w}, env)
    unreadable = check_readable(list(sandbox.install)) if sandbox.full else []
    if unreadable:
        raise PermissionError(f"session uids cannot read {', '.join(unreadable)}")
    os.write(report_w, b"ready\n")
    os.close(report_w)
    run(child_end)


def _reap_until(system: System, session: int, lifeline: int) -> int:
    """Reap every process of the namespace (orphans come to pid 1) until the
    session process ends, or the worker does (its lifeline pipe closes)."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)

    def interrupt(*_):
        with contextlib.suppress(ProcessLookupError):
            system.killpg(session, signal.SIGINT)

    signal.signal(signal.SIGINT, interrupt)  # pid 1 gets only signals it handles
    while True:
        while True:
            try:
                pid, status = system.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return 0
            if pid == 0:
                break
            if pid == session:
                return exit_code_for(status)
        readable, _, _ = select.select([lifeline, wake_r], [], [])
        if lifeline in readable and os.read(lifeline, 1) == b"":
            return 0  # the worker is gone: so is every process of this namespace
        with contextlib.suppress(BlockingIOError):
            os.read(wake_r, 4096)


def exit_code_for(status: int) -> int:
    """The init's exit code for its session's wait status: 128 + signal when a
    signal ended it (SIGXCPU: the CPU limit), else 0."""
    return 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0


def signal_of(status: int | None, through_init: bool) -> int | None:
    """The signal that ended a session, from the wait status the worker saw."""
    if status is None:
        return None
    if os.WIFSIGNALED(status):
        return os.WTERMSIG(status)
    if through_init and os.WIFEXITED(status) and os.WEXITSTATUS(status) > 128:
        return os.WEXITSTATUS(status) - 128
    return None
