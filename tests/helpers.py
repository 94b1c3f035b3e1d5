"""Shared test helpers: real processes, found and cleaned up by data folder."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SALVUSCTL = [sys.executable, "-m", "salvusctl"]
COMMAND_TIMEOUT = 180


def run(data: Path, *args: str, check: bool = True, timeout: float = COMMAND_TIMEOUT,
        salvusctl: list[str] | None = None, env: dict | None = None
        ) -> subprocess.CompletedProcess:
    """Run salvusctl as an admin would, in its own process."""
    result = subprocess.run(
        [*(salvusctl or SALVUSCTL), "--data", str(data), *args],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        check=False, env={**os.environ, **(env or {})},
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"salvusctl {' '.join(args)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


def running_pid(data: Path, name: str) -> int:
    """The pid of the appliance's program ``name``, 0 unless it is RUNNING."""
    rows = json.loads(run(data, "status", "--json", check=False).stdout)
    row = next(r for r in rows if r["name"] == name)
    return row["pid"] if row["state"] == "RUNNING" else 0


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# Every port of every base handed out in this test run: a folder initialized
# but not started yet holds none of its ports, and the next base must not
# land on them (a base 100 above another puts its database on the other's
# memcached port).
_HANDED_OUT: set[int] = set()


def _bases_outside_ephemeral_ports() -> list[int]:
    """Bases whose ports all lie outside the kernel's range for outgoing
    connections: a port of a program stopped for a while (the database in an
    outage test) is otherwise taken by some client's connection meanwhile."""
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    return [base for base in range(10000, 64700, 10) if base + 800 <= low or base > high]


_BASES = _bases_outside_ephemeral_ports()


def free_base_port() -> int:
    """A random base port whose web (+0..), worker (+100..), db (+200), memcached
    (+300), bus (+400..), workers' publisher (+500..) and haproxy's http (+600..)
    and https (+700..) ports are free, none of them handed out before."""
    for _ in range(200):
        base = random.choice(_BASES)
        ports = {base + offset + i for offset in range(0, 800, 100) for i in range(4)}
        if not ports & _HANDED_OUT and all(map(port_free, ports)):
            _HANDED_OUT.update(ports)
            return base
    raise RuntimeError("no free base port found")


def _proc_info(pid: str) -> tuple[str, str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return "", ""
    return cmdline, cwd


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie has ended: it has no command line)."""
    cmdline, _ = _proc_info(str(pid))
    return bool(cmdline)


def processes_of(root: Path) -> dict[int, str]:
    """Live processes that belong to a data folder: named in their command line
    or working in it (PostgreSQL backends rename themselves but stay in the
    cluster folder)."""
    root_text = str(root)
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        cmdline, cwd = _proc_info(pid)
        if not cmdline:
            continue  # exited, or a zombie (no command line)
        if root_text in cmdline or cwd == root_text or cwd.startswith(root_text + "/"):
            found[int(pid)] = cmdline
    return found


def kill_everything_of(root: Path, grace: float = 5.0) -> None:
    """Last-resort cleanup: TERM then KILL whatever still runs from ``root``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        left = processes_of(root)
        if not left:
            return
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while processes_of(root) and time.monotonic() < deadline:
            time.sleep(0.1)


def processes_of_uid(uid: int) -> list[int]:
    """Live processes of ``uid`` (zombies have ended; they only await a reaper)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        if int(fields.get("Uid", "-1").split()[0]) == uid and \
                not fields.get("State", "").strip().startswith("Z"):
            found.append(int(pid))
    return found


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def terminate(proc: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL if it has not ended within ``timeout``; always reaped."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def private_venv(folder: Path, mode_of_lib: int = 0o755) -> Path:
    """A virtualenv inside a 0700 folder (a Python in someone's home, say) that
    reaches this project's packages through a .pth file."""
    private = folder / "private"
    private.mkdir(mode=0o700)
    venv = private / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    site = next((venv / "lib").glob("python3*/site-packages"))
    ours = next(p for p in sys.path if p.endswith("site-packages") and "/.venv/" in p)
    (site / "salvus-test.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    os.chmod(venv / "lib", mode_of_lib)
    return venv / "bin" / "python"


def edit_config(data: Path, values: dict[tuple[str, str], str]) -> None:
    """Change keys of salvus.conf, as an admin would (the file stays commented)."""
    from salvusctl import config as configfile

    path = data / "salvus.conf"
    raw = configfile.read_raw(path)
    raw.update(values)
    configfile.write(path, raw)


@contextlib.contextmanager
def started_appliance(prefix: str, *init_options: str,
                      config: dict[tuple[str, str], str] | None = None):
    """An appliance initialized (with ``init_options``, then ``config`` edited
    into salvus.conf) and started in a temp folder: (data folder, web port,
    start's output). Stopped, its processes killed and its folder removed
    afterwards, also when the test fails."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(folder, 0o755)
    data = folder / "data"
    base = free_base_port()
    try:
        run(data, "init", "--base-port", str(base), *init_options)
        if config:
            edit_config(data, config)
        yield data, base, run(data, "start")
    finally:
        if (data / "salvus.conf").exists():
            run(data, "stop", check=False)
        kill_everything_of(folder)
        shutil.rmtree(folder, ignore_errors=True)
