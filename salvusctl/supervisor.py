"""Talk to this data folder's supervisord over XML-RPC on its unix socket.

supervisor ships the transport (``supervisor.xmlrpc.SupervisorTransport``);
nothing here parses supervisorctl's output.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Callable

from supervisor.xmlrpc import Faults, SupervisorTransport

from salvusctl import access
from salvusctl.datadir import DataDir
from salvusctl.errors import SupervisorUnreachable

# Not xmlrpc.client.Fault: a Fault is supervisord's answer, for the caller.
TRANSPORT_ERRORS = (OSError, http.client.HTTPException, xmlrpc.client.ProtocolError)
FAILED_STATES = {"FATAL", "EXITED", "BACKOFF", "UNKNOWN"}


class Supervisor:
    """A thin client: each method is one XML-RPC call or a wait built on them."""

    def __init__(self, data: DataDir):
        self.data = data
        self._proxy = None

    @property
    def rpc(self):
        if self._proxy is None:
            password = access.supervisor_password(self.data)
            transport = SupervisorTransport("salvus" if password else None, password,
                                            f"unix://{self.data.supervisor_sock}")
            # The host part is ignored by the unix transport.
            self._proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
        return self._proxy.supervisor

    def reachable(self) -> bool:
        if not self.data.supervisor_sock.exists():
            return False
        try:
            return self.rpc.getState()["statename"] == "RUNNING"
        except TRANSPORT_ERRORS:
            # A failed request leaves the transport's connection unusable.
            self._proxy = None
            return False

    def call(self, method: str, *args):
        """One XML-RPC call; a dead socket becomes a clear error."""
        try:
            return getattr(self.rpc, method)(*args)
        except TRANSPORT_ERRORS as exc:
            self._proxy = None
            raise SupervisorUnreachable(
                f"supervisord of {self.data.root} is not reachable ({exc}); "
                "start it with `salvusctl start`"
            ) from None

    def processes(self) -> dict[str, dict]:
        return {info["name"]: info for info in self.call("getAllProcessInfo")}

    def start_daemon(self, timeout: float = 30) -> None:
        """Start supervisord for this data folder and wait until it answers."""
        self.data.run.mkdir(exist_ok=True)
        self.data.logs.mkdir(exist_ok=True)
        out = self.data.logs / "supervisord.stdout"
        with open(out, "ab") as sink:
            result = subprocess.run(
                [sys.executable, "-m", "supervisor.supervisord", "-c",
                 str(self.data.supervisord_conf)],
                stdin=subprocess.DEVNULL, stdout=sink, stderr=sink,
                cwd=self.data.root, timeout=timeout, check=False,
            )
        if result.returncode != 0:
            lines = out.read_text(errors="replace").strip().splitlines()
            raise SupervisorUnreachable(
                f"supervisord did not start ({lines[-1] if lines else result.returncode}); "
                f"see {out}"
            )
        deadline = time.monotonic() + timeout
        while not self.reachable():
            if time.monotonic() > deadline:
                raise SupervisorUnreachable(
                    f"supervisord started but did not answer within {timeout:.0f}s; "
                    f"see {self.data.logs / 'supervisord.log'}"
                )
            time.sleep(0.05)

    def apply_config_changes(self, say: Callable[[str], None]) -> list[str]:
        """Like `supervisorctl update`: load re-rendered program files. Returns
        the changed programs that were running: the caller starts them again."""
        added, changed, removed = self.call("reloadConfig")[0]
        states = self.processes()
        running = [name for name in changed
                   if states.get(name, {}).get("statename") in ("RUNNING", "STARTING",
                                                                  "BACKOFF")]
        for name in removed + changed:
            try:
                self.call("stopProcessGroup", name)
            except xmlrpc.client.Fault as fault:
                if fault.faultCode != Faults.NOT_RUNNING:
                    raise
            self.call("removeProcessGroup", name)
        for name in changed + added:
            self.call("addProcessGroup", name)
        for name in removed:
            say(f"{name}: removed from supervisord")
        for name in changed:
            say(f"{name}: configuration reloaded" + (", restarting it" if name in running
                                                     else ""))
        return running

    def tail_log(self, name: str, stderr: bool = False, nbytes: int = 4000) -> list[str]:
        method = "tailProcessStderrLog" if stderr else "tailProcessStdoutLog"
        try:
            text = self.call(method, name, 0, nbytes)[0]
        except xmlrpc.client.Fault:
            return []
        return text.strip().splitlines()

    def shutdown(self, timeout: float = 60) -> None:
        """Stop supervisord itself and wait for its process to end."""
        pid = self.pid()
        with contextlib.suppress(*TRANSPORT_ERRORS, xmlrpc.client.Fault):
            self.rpc.shutdown()
        deadline = time.monotonic() + timeout
        while pid and _alive(pid):
            if time.monotonic() > deadline:
                raise SupervisorUnreachable(
                    f"supervisord (pid {pid}) did not exit within {timeout:.0f}s; "
                    f"see {self.data.logs / 'supervisord.log'}"
                )
            time.sleep(0.05)
        # A socket file left behind would only confuse the next `reachable`.
        for leftover in (self.data.supervisor_sock,):
            if leftover.exists() and not _socket_answers(leftover):
                leftover.unlink()

    def pid(self) -> int | None:
        try:
            return int(self.data.supervisor_pid.read_text().strip())
        except (OSError, ValueError):
            return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it has ended for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _socket_answers(path) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(path))
            return True
        except OSError:
            return False
