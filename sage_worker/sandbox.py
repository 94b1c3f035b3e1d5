"""A session's process tree, and the namespaces it lives in.

With isolation ``full``::

    worker         unshare(pid) just for this fork, then back to its own
      init         pid 1 of a new pid namespace: unshares mount, IPC, UTS (and
                   network), mounts the session's file system, forks the
                   session, reaps, forwards SIGINT; when it ends, the kernel
                   kills every process of the namespace, so no setsid or
                   double-forked grandchild outlives its session
        session    its own uid, no capabilities, rlimits; runs user code

With isolation ``none`` the worker forks the session process directly.

The worker forks and goes on (a burst of new sessions never holds up its
loop); the new processes report on a pipe that only the worker reads, one
line: ``ready`` from the session once it is confined, or ``error TEXT`` from
the step that failed. No user code runs before ``ready``: the session process
reads its first request only after it has confined itself. Each forked level
ends in ``os._exit``: no child can ever return into the worker's code.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sage_worker import mounts, seccomp
from sage_worker.cgroups import Group
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
# The session's own writable places, on its tmpfs; /run too, which holds the
# host's sockets (a network namespace does not keep a unix socket out of
# reach) and its shared lock folder: the session gets an empty one.
PRIVATE_DIRS = {"tmp": Path("/tmp"), "var-tmp": Path("/var/tmp"), "shm": Path("/dev/shm"),
                "run": Path("/run")}
MQUEUE = Path("/dev/mqueue")


@dataclass(frozen=True)
class Spawned:
    pid: int  # the worker's child: the session's init, or (isolation none) the session
    report: int  # read end of its report pipe: "ready" or "error TEXT", then EOF


def spawn(system: System, sandbox: Sandbox, uid: int | None, home: Path,
          child_end: socket.socket, lifeline: tuple[int, int], own_pid_ns: int | None,
          run: Callable[[socket.socket], None], env: dict[str, str],
          check_install: bool = False, group: Group | None = None) -> Spawned:
    """Fork one session and return at once; its report says when it is confined."""
    report_r, report_w = os.pipe()
    worker_pid = os.getpid()
    if sandbox.full:
        # Our next child becomes pid 1 of a new pid namespace; setns puts our
        # later children back into ours (a second unshare would be refused).
        system.unshare(CLONE_NEWPID)
        try:
            pid = system.fork()
        finally:
            if os.getpid() == worker_pid:
                system.setns(own_pid_ns, CLONE_NEWPID)
    else:
        pid = system.fork()
    if pid == 0:
        def first_step() -> int | None:
            if group is not None:
                group.enter()  # before anything is forked: every process of the session
            step = _init if sandbox.full else _session
            return step(system, sandbox, uid, home, child_end, report_w, lifeline, run, env,
                        worker_pid, check_install)

        _exit_after(report_w, first_step)
    os.close(report_w)
    return Spawned(pid, report_r)


def read_report(fd: int, timeout: float = REPORT_TIMEOUT) -> str:
    """The report of a session (blocking): "ready", or why it is not."""
    data = b""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return "error setup timed out"
        chunk = os.read(fd, 4096)
        if not chunk:
            return outcome(data)
        data += chunk


def outcome(data: bytes) -> str:
    """What a whole report says: "ready" or "error TEXT"."""
    lines = data.decode(errors="replace").splitlines()
    if "ready" in lines:
        return "ready"
    errors = [line for line in lines if line.startswith("error ")]
    return errors[0] if errors else "error the session process ended during setup"


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


def _reset_signals() -> None:
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)


def _init(system: System, sandbox: Sandbox, uid: int, home: Path, child_end: socket.socket,
          report_w: int, lifeline: tuple[int, int], run: Callable, env: dict[str, str],
          worker_pid: int, check_install: bool) -> int:
    """Pid 1 of the session's namespace; returns its exit status."""
    _reset_signals()
    system.setsid()
    close_inherited_fds({report_w, lifeline[0], child_end.fileno()})  # the write end too
    flags = CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS
    system.unshare(flags | (CLONE_NEWNET if sandbox.private_network else 0))
    build_filesystem(system, sandbox, uid, home)
    session = system.fork()
    if session == 0:
        _exit_after(report_w, lambda: _session(system, sandbox, uid, home, child_end,
                                               report_w, None, run, env, None,
                                               check_install))
    os.close(report_w)
    child_end.close()
    return _reap_until(system, session, lifeline[0])


def build_filesystem(system: System, sandbox: Sandbox, uid: int, home: Path) -> None:
    """The host read-only; the session's own files on one size- and
    inode-limited tmpfs (its home, /tmp, /var/tmp, /dev/shm, /run); the
    install readable, /root and /home hidden; a /proc of its own pid namespace
    and POSIX message queues of its own IPC namespace."""
    system.mount(None, "/", None, mounts.MS_REC | mounts.MS_PRIVATE, None)  # nothing leaks out
    mounts.read_only_everything(system)
    limits = sandbox.limits
    system.mount("tmpfs", str(home), "tmpfs", mounts.MS_NOSUID | mounts.MS_NODEV,
                 f"size={limits.disk_mb}m,nr_inodes={limits.disk_files},mode=0755")
    (home / "home").mkdir(mode=0o700)
    os.chown(home / "home", uid, uid)
    for name in PRIVATE_DIRS:
        (home / name).mkdir()
        os.chmod(home / name, 0o755 if name == "run" else 0o1777)
    (home / "run" / "lock").mkdir()
    os.chmod(home / "run" / "lock", 0o1777)
    view = mounts.plan(
        needed={**{path: path for path in sandbox.install}, home: home / "home"},
        overlays={target: home / name for name, target in PRIVATE_DIRS.items()
                  if target.is_dir()})
    mounts.apply(system, view)
    quiet = mounts.MS_NOSUID | mounts.MS_NODEV | mounts.MS_NOEXEC
    if MQUEUE.is_dir():
        system.mount("mqueue", str(MQUEUE), "mqueue", quiet, None)
    system.mount("proc", "/proc", "proc", quiet, None)


def _session(system: System, sandbox: Sandbox, uid: int | None, home: Path,
             child_end: socket.socket, report_w: int, lifeline: tuple[int, int] | None,
             run: Callable, env: dict[str, str], worker_pid: int | None,
             check_install: bool) -> None:
    """The session process: confine, report ready, run user code."""
    if worker_pid is not None:  # isolation none: forked by the worker itself
        _reset_signals()
        os.close(lifeline[1])
        system.set_parent_death_signal(signal.SIGKILL)  # no namespace ends it with the worker
        if system.getppid() != worker_pid:
            return
    system.setsid()  # its own process group: an interrupt reaches its children too
    harden(system, sandbox.limits, uid, home, {child_end.fileno(), report_w}, env)
    if sandbox.full:
        seccomp.install()  # after NO_NEW_PRIVS (harden): no namespaces, mounts, BPF, ...
    unreadable = check_readable(list(sandbox.install)) if check_install else []
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
