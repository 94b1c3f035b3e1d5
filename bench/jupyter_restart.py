"""Jupyter's counterpart of the failover figure of bench/bus_bench.py: what a
notebook page gets when its jupyter_server is restarted while a cell prints.

A jupyter_server (token auth, loopback, a random free port, its own runtime,
config, data, IPython and notebook folders) starts a python3 kernel, either
through the REST API (POST /api/kernels) or as the notebook UI does (POST
/api/sessions for a notebook path). A websocket client on
/api/kernels/ID/channels runs bus_bench's failover cell (400 lines, one every
10 ms); after the first stream message (ipykernel sends stdout every 0.2 s,
so it holds about 20 lines) the server is stopped:

- kill: kill -9, then started again on the same port with the same folders
  and the same token;
- term: SIGTERM (a graceful stop), then started again the same way;
- drop: control, the server keeps running and only the websocket is closed.

The client then does what a notebook page does: reconnects to the kernel id
with the same client session id, lists /api/kernels and /api/sessions (the
session variant then asks for a session for its notebook path again, as a
reloaded page does) and reads the rest of the cell. Per variant: seconds from
the kill to the server answering again, whether the kernel is still listed,
whether the orphaned kernel process still runs then (and when it ended), how
many of the 400 lines arrived (before the kill + after reconnecting), and
whether the execute_reply and the idle status arrived.

    python bench/jupyter_restart.py [--runs N]

writes bench/results/jupyter_restart.json. About 1 minute per run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from simple_websocket import Client, ConnectionClosed  # noqa: E402

from bench.web_bench import execute_request  # noqa: E402
from tests.helpers import alive, kill_everything_of, processes_of, terminate  # noqa: E402
from tests.web_client import free_port  # noqa: E402

LINES = 400
CELL = f"import time\nfor i in range({LINES}):\n    print(i)\n    time.sleep(0.01)"
NOTEBOOK = "failover.ipynb"
STARTS = ("kernel", "session")
STOPS = ("kill", "term", "drop")
ORPHAN_WATCH = 10.0  # seconds after the kill to see whether the orphaned kernel ends


# ----------------------------------------------------------------- the server

class Server:
    """jupyter_server on one port with its own folders; start() again after a
    stop is the restart: same port, same folders, same token."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        self.token = uuid.uuid4().hex
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        for name in ("runtime", "config", "data", "ipython", "notebooks"):
            (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / "notebooks" / NOTEBOOK).write_text(json.dumps(
            {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
        self.env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(folder / "runtime"),
                    "JUPYTER_CONFIG_DIR": str(folder / "config"),
                    "JUPYTER_DATA_DIR": str(folder / "data"),
                    "IPYTHONDIR": str(folder / "ipython")}

    def start(self) -> None:
        self.starts += 1
        with open(self.folder / f"server{self.starts}.log", "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jupyter_server", "--no-browser", "--ip=127.0.0.1",
                 f"--port={self.port}", "--ServerApp.port_retries=0", "--allow-root",
                 f"--IdentityProvider.token={self.token}",
                 f"--ServerApp.root_dir={self.folder / 'notebooks'}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self.env, cwd=self.folder)

    def api(self, method: str, path: str, body: dict | None = None) -> tuple[int, object]:
        """(HTTP status, decoded body); OSError when nothing answers."""
        request = urllib.request.Request(
            self.url + path, method=method, data=json.dumps(body).encode() if body else None,
            headers={"Authorization": f"token {self.token}",
                     "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, None

    def wait_answering(self, timeout: float = 60) -> float:
        """perf_counter() when GET /api/status first answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter_server exited {self.proc.returncode}, see "
                                   f"{self.folder}/server{self.starts}.log")
            with contextlib.suppress(OSError):
                if self.api("GET", "/api/status")[0] == 200:
                    return time.perf_counter()
            time.sleep(0.02)
        raise TimeoutError("jupyter_server did not answer")

    def stop(self) -> None:
        if self.proc:
            terminate(self.proc, timeout=20)


def open_kernel(server: Server, start: str) -> tuple[str, str | None]:
    """(kernel id, session id): a bare kernel, or a notebook's session."""
    if start == "kernel":
        status, body = server.api("POST", "/api/kernels", {"name": "python3"})
        assert status == 201, status
        return body["id"], None
    status, body = server.api("POST", "/api/sessions", {
        "path": NOTEBOOK, "name": NOTEBOOK, "type": "notebook", "kernel": {"name": "python3"}})
    assert status == 201, status
    return body["kernel"]["id"], body["id"]


def kernel_pid(folder: Path, kernel_id: str) -> int:
    """The kernel process, found by its connection file (0 if none runs)."""
    return next((pid for pid, cmdline in processes_of(folder).items()
                 if f"kernel-{kernel_id}.json" in cmdline), 0)


class Watch(threading.Thread):
    """Records when a process ends (perf_counter), polling every 10 ms."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.end: float | None = None
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.01):
            if not alive(self.pid):
                self.end = time.perf_counter()
                return


# ----------------------------------------------------------------- the page

def connect(server: Server, kernel_id: str, session: str) -> Client:
    return Client.connect(
        f"ws://127.0.0.1:{server.port}/api/kernels/{kernel_id}/channels?session_id={session}",
        headers={"Authorization": f"token {server.token}"})


def receive(ws: Client, timeout: float) -> dict | None:
    frame = ws.receive(timeout=max(timeout, 0.01))
    return None if frame is None else json.loads(frame)


def parent_of(message: dict) -> str | None:
    return (message.get("parent_header") or {}).get("msg_id")


def wait_ready(ws: Client, session: str, timeout: float = 60) -> None:
    """kernel_info_request until the kernel answers, as the page does on connecting."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg_id = uuid.uuid4().hex
        request = execute_request(msg_id, session, "")
        request["header"]["msg_type"] = "kernel_info_request"
        request["content"] = {}
        ws.send(json.dumps(request))
        until = time.monotonic() + 5
        while (left := until - time.monotonic()) > 0:
            message = receive(ws, left)
            if message and parent_of(message) == msg_id and \
                    message["msg_type"] == "kernel_info_reply":
                return
    raise TimeoutError("the kernel did not answer kernel_info_request")


def finished(got: list[tuple[float, dict]]) -> bool:
    kinds = {(m["msg_type"], m["content"].get("execution_state")) for _, m in got}
    return ("execute_reply", None) in kinds and ("status", "idle") in kinds


def collect(ws: Client, msg_id: str, quiet: float, limit: float,
            until_stream: bool = False) -> list[tuple[float, dict]]:
    """(perf_counter, message) answering ``msg_id``: until the execute_reply and
    idle status (or the first stream message), ``quiet`` seconds of silence,
    ``limit`` seconds in all, or the socket closes."""
    got: list[tuple[float, dict]] = []
    deadline = time.monotonic() + limit
    with contextlib.suppress(ConnectionClosed):
        while not finished(got) and (left := deadline - time.monotonic()) > 0:
            message = receive(ws, min(quiet, left))
            if message is None:
                break
            if parent_of(message) == msg_id:
                got.append((time.perf_counter(), message))
                if until_stream and message["msg_type"] == "stream":
                    break
    return got


def reconnect(server: Server, kernel_id: str, session: str, msg_id: str
              ) -> tuple[str, list[tuple[float, dict]]]:
    """The page's reconnection to its kernel: (outcome, messages of the cell)."""
    try:
        ws = connect(server, kernel_id, session)
    except Exception as error:  # simple_websocket raises ConnectionError on a refused upgrade
        return f"refused: {type(error).__name__}: {error}"[:120], []
    try:
        return "connected", collect(ws, msg_id, quiet=5, limit=60)
    finally:
        ws.close()


def lines_of(got: list[tuple[float, dict]]) -> str:
    return "".join(m["content"]["text"] for _, m in got
                   if m["msg_type"] == "stream" and m["content"]["name"] == "stdout")


# ----------------------------------------------------------------- one run

def stop_server(server: Server, stop: str, ws: Client) -> tuple[float, dict]:
    """Stop as asked, start again (not for drop): (perf_counter of the signal, facts)."""
    facts: dict = {}
    if stop == "drop":
        ws.close()
        return time.perf_counter(), facts
    server.proc.send_signal(signal.SIGKILL if stop == "kill" else signal.SIGTERM)
    signalled = time.perf_counter()
    try:
        server.proc.wait(timeout=60)
        facts["forced"] = False
    except subprocess.TimeoutExpired:  # a graceful stop that did not end
        server.proc.kill()
        server.proc.wait(timeout=30)
        facts["forced"] = True
    facts["server_exit_s"] = time.perf_counter() - signalled
    server.start()
    return signalled, facts


def recover(server: Server, start: str, kernel_id: str, session_id: str | None) -> dict:
    """What the page learns from the REST API once the server answers."""
    _, kernels = server.api("GET", "/api/kernels")
    _, sessions = server.api("GET", "/api/sessions")
    status, _ = server.api("GET", f"/api/kernels/{kernel_id}")
    facts = {"kernels_listed": len(kernels), "sessions_listed": len(sessions),
             "kernel_listed": any(k["id"] == kernel_id for k in kernels),
             "session_listed": any(s["id"] == session_id for s in sessions),
             "get_kernel_status": status}
    if start == "session":  # a reloaded page asks for its notebook's session again
        _, body = server.api("POST", "/api/sessions", {
            "path": NOTEBOOK, "name": NOTEBOOK, "type": "notebook",
            "kernel": {"name": "python3"}})
        facts["reopened_same_kernel"] = body["kernel"]["id"] == kernel_id
    return facts


def run_case(root: Path, start: str, stop: str) -> dict:
    folder = Path(tempfile.mkdtemp(prefix=f"{start}-{stop}-", dir=root))
    server = Server(folder)
    sockets: list[Client] = []
    watch = None
    try:
        begun = time.perf_counter()
        server.start()
        cold = server.wait_answering() - begun
        kernel_id, session_id = open_kernel(server, start)
        page = uuid.uuid4().hex  # the page's client session id, kept on reconnecting
        sockets.append(connect(server, kernel_id, page))
        wait_ready(sockets[0], page)
        pid = kernel_pid(folder, kernel_id)
        assert pid, f"no process for kernel {kernel_id}"
        msg_id = uuid.uuid4().hex
        sockets[0].send(json.dumps(execute_request(msg_id, page, CELL)))
        before = collect(sockets[0], msg_id, quiet=30, limit=30, until_stream=True)
        if not before or before[-1][1]["msg_type"] != "stream":
            raise TimeoutError("no output from the cell")
        watch = Watch(pid)
        watch.start()
        killed, facts = stop_server(server, stop, sockets[0])
        before += collect(sockets[0], msg_id, quiet=2, limit=30)
        back = server.wait_answering() - killed if stop != "drop" else None
        orphan_at_answer = alive(pid)
        facts.update(recover(server, start, kernel_id, session_id))
        outcome, after = reconnect(server, kernel_id, page, msg_id)
        if stop != "drop":  # give the orphan its time to notice
            watch.join(timeout=max(0.0, ORPHAN_WATCH - (time.perf_counter() - killed)))
        # the kernel's stderr goes to the first server's log, also once orphaned
        said = (folder / "server1.log").read_text(errors="replace")
        facts["kernel_saw_parent_exit"] = "Parent appears to have exited" in said
        text = lines_of(before + after)
        streams_after = [t for t, m in after if m["msg_type"] == "stream"]
        return {"start": start, "stop": stop, "cold_start_s": cold, "back_s": back,
                "kernel_pid": pid, "kernel_running_when_back": orphan_at_answer,
                "kernel_ended_s": watch.end - killed if watch.end else None,
                "reconnect": outcome,
                "lines_before": len(lines_of(before).splitlines()),
                "lines_after": len(lines_of(after).splitlines()),
                "lines_received": len(text.splitlines()),
                "every_line_once": text == "".join(f"{i}\n" for i in range(LINES)),
                "first_line_after_s": streams_after[0] - killed if streams_after else None,
                "execute_reply": any(m["msg_type"] == "execute_reply"
                                     for _, m in before + after),
                "error_output": next((m["content"]["ename"] for _, m in before + after
                                      if m["msg_type"] == "error"), None),
                "idle_status": any(m["msg_type"] == "status" and
                                   m["content"]["execution_state"] == "idle"
                                   for _, m in before + after),
                **facts}
    finally:
        if watch:
            watch.done.set()
        for ws in sockets:
            with contextlib.suppress(Exception):
                ws.close()
        server.stop()
        kill_everything_of(folder)
        shutil.rmtree(folder, ignore_errors=True)


# ----------------------------------------------------------------- main

def summarize(cases: list[dict]) -> dict:
    summary = {}
    for start in STARTS:
        for stop in STOPS:
            runs = [c for c in cases if c["start"] == start and c["stop"] == stop]
            if not runs:
                continue

            def median(key, runs=runs):
                values = [r[key] for r in runs if r[key] is not None]
                return statistics.median(values) if values else None

            summary[f"{start}/{stop}"] = {
                "n": len(runs), "back_s": median("back_s"),
                "kernel_listed": all(r["kernel_listed"] for r in runs),
                "kernel_running_when_back": sum(r["kernel_running_when_back"] for r in runs),
                "kernel_ended_s": median("kernel_ended_s"),
                "lines_received": [r["lines_received"] for r in runs],
                "lines_after": [r["lines_after"] for r in runs],
                "execute_reply": sum(r["execute_reply"] for r in runs),
                "idle_status": sum(r["idle_status"] for r in runs),
                "every_line_once": sum(r["every_line_once"] for r in runs),
                "first_line_after_s": median("first_line_after_s"),
                "reconnect": sorted({r["reconnect"] for r in runs}),
                "error_output": sorted({str(r["error_output"]) for r in runs})}
    return summary


def show(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, list):
        return "/".join(map(str, value))
    return str(value)


def print_summary(summary: dict) -> None:
    columns = [("back_s", "back s"), ("kernel_listed", "listed"),
               ("kernel_running_when_back", "orphan"), ("kernel_ended_s", "ended s"),
               ("lines_received", "lines"), ("lines_after", "after"),
               ("execute_reply", "reply"), ("idle_status", "idle"),
               ("every_line_once", "once"),
               ("first_line_after_s", "next s")]
    print(f"\nJupyter server restarted while a cell prints {LINES} lines "
          "(median over runs; counts are runs out of n)")
    print(f"{'variant':<16}{'n':>3}" + "".join(f"{title:>9}" for _, title in columns))
    for name, row in summary.items():
        print(f"{name:<16}{row['n']:>3}" + "".join(f"{show(row[key]):>9}"
                                                    for key, _ in columns))
    print("back s: kill to /api/status answering again; listed: kernel id in /api/kernels;\n"
          "orphan: runs where the old kernel process still ran then; ended s: kill to its\n"
          "end; lines: of 400 received (before + after reconnecting); after: after\n"
          "reconnecting; reply, idle: runs with the execute_reply, the idle status; once:\n"
          "runs with every line exactly once; next s: kill to the next line")
    for name, row in summary.items():
        print(f"  {name}: reconnect {'; '.join(row['reconnect'])}; error output "
              f"{'/'.join(row['error_output'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2, help="runs of each variant")
    parser.add_argument("--stops", default=",".join(STOPS),
                        help="comma-separated, of kill,term,drop")
    args = parser.parse_args()
    stops = [s for s in args.stops.split(",") if s]
    assert set(stops) <= set(STOPS), stops
    root = Path(tempfile.mkdtemp(prefix="salvus-jupyter-restart-"))
    cases = []
    try:
        for run in range(args.runs):
            for start in STARTS:
                for stop in stops:
                    case = run_case(root, start, stop)
                    print(f"run {run} {start}/{stop}: back {show(case['back_s'])} s, lines "
                          f"{case['lines_received']}, reply {show(case['execute_reply'])}, "
                          f"reconnect {case['reconnect']}", flush=True)
                    cases.append(case)
    finally:
        kill_everything_of(root)
        left = processes_of(root)
        shutil.rmtree(root, ignore_errors=True)
    assert not left, f"processes left behind: {left}"
    assert not root.exists(), root
    summary = summarize(cases)
    print_summary(summary)
    out = ROOT / "bench" / "results" / "jupyter_restart.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(
        {"lines": LINES, "runs": args.runs, "jupyter_server": version("jupyter_server"),
         "ipykernel": version("ipykernel"), "summary": summary, "cases": cases},
        indent=1) + "\n")
    print(f"wrote {out} (no process left, temp folders removed)")


if __name__ == "__main__":
    main()
