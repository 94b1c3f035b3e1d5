"""Frontend benchmark: a websocket client -> frontend -> worker -> back, side by
side with Jupyter Server's kernel websocket doing the same work.

Run: .venv/bin/python bench/web_bench.py (needs the bench extra, which brings
jupyter_server). Prints a table with ratios and writes bench/results/web.json
and web.png. About 2-3 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simple_websocket import Client

from bench.common import p50, percentile, print_table, save
from tests.web_client import Browserish, WebProcess, free_port
from tests.worker_client import WorkerProcess

CODE = "1+1"


# ----------------------------------------------------------------- salvus

def salvus_round_trips(web: WebProcess, n: int) -> list[float]:
    client = Browserish(web, f"browser={uuid.uuid4().hex}")
    client.open()
    client.run("warm", CODE)
    times = []
    for i in range(n):
        start = time.perf_counter()
        messages = client.run(f"c{i}", CODE)
        times.append(time.perf_counter() - start)
        assert messages[-1]["status"] == "ok"
    client.close()
    return times


def concurrent(run_one, clients: int, cells: int) -> tuple[float, list[float]]:
    """``clients`` threads each run ``cells`` small cells; (wall, latencies)."""
    latencies: list[float] = []
    errors: list[BaseException] = []
    # The clock starts when every client is connected (kernels started).
    started: list[float] = []
    barrier = threading.Barrier(clients, action=lambda: started.append(time.perf_counter()))

    def worker(index: int) -> None:
        try:
            run_one(index, cells, latencies, barrier)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    wall = time.perf_counter() - started[0] if started else float("nan")
    if errors:
        raise errors[0]
    return wall, latencies


def salvus_client(web: WebProcess):
    def run_one(index, cells, latencies, barrier):
        client = Browserish(web, f"browser={uuid.uuid4().hex}")
        client.open()
        client.run("warm", CODE, timeout=120)
        barrier.wait()
        for i in range(cells):
            start = time.perf_counter()
            assert client.run(f"c{i}", CODE, timeout=120)[-1]["status"] == "ok"
            latencies.append(time.perf_counter() - start)
        client.close()
    return run_one


# ----------------------------------------------------------------- jupyter server

class JupyterServer:
    def __init__(self, folder: Path):
        self.port = free_port()
        self.token = uuid.uuid4().hex
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(folder / "jupyter.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter_server", "--no-browser", f"--port={self.port}",
             "--ip=127.0.0.1", "--allow-root", f"--IdentityProvider.token={self.token}",
             f"--ServerApp.root_dir={folder}"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                self.api("GET", "/api/status")
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("jupyter server did not start")

    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(
            self.url + path, method=method, data=json.dumps(body).encode() if body else None,
            headers={"Authorization": f"token {self.token}",
                     "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read() or b"{}")

    def kernel(self) -> JupyterKernel:
        kernel_id = self.api("POST", "/api/kernels", {"name": "python3"})["id"]
        return JupyterKernel(self, kernel_id)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class JupyterKernel:
    """The kernel websocket as JupyterLab speaks it (JSON messages)."""

    def __init__(self, server: JupyterServer, kernel_id: str):
        self.server = server
        self.id = kernel_id
        self.session = uuid.uuid4().hex
        self.ws = Client.connect(
            f"ws://127.0.0.1:{server.port}/api/kernels/{kernel_id}/channels"
            f"?session_id={self.session}",
            headers={"Authorization": f"token {server.token}"})
        deadline = time.monotonic() + 60
        while True:  # the kernel may still be starting
            try:
                self.execute(CODE, timeout=5)
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise

    def execute(self, code: str, timeout: float = 60) -> str | None:
        msg_id = uuid.uuid4().hex
        self.ws.send(json.dumps({
            "header": {"msg_id": msg_id, "username": "bench", "session": self.session,
                       "msg_type": "execute_request", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": code, "silent": False, "store_history": False,
                        "user_expressions": {}, "allow_stdin": False},
        }))
        result, idle, reply = None, False, False
        deadline = time.monotonic() + timeout
        while not (idle and reply):
            frame = self.ws.receive(timeout=max(deadline - time.monotonic(), 0.01))
            if frame is None:
                raise TimeoutError("no answer from the kernel")
            message = json.loads(frame)
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = message["msg_type"]
            if kind == "execute_result":
                result = message["content"]["data"]["text/plain"]
            elif kind == "status" and message["content"]["execution_state"] == "idle":
                idle = True
            elif kind == "execute_reply":
                reply = True
        return result

    def close(self) -> None:
        self.ws.close()
        self.server.api("DELETE", f"/api/kernels/{self.id}")


def jupyter_round_trips(server: JupyterServer, n: int) -> list[float]:
    kernel = server.kernel()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        assert kernel.execute(CODE) == "2"
        times.append(time.perf_counter() - start)
    kernel.close()
    return times


def jupyter_client(server: JupyterServer):
    def run_one(index, cells, latencies, barrier):
        kernel = server.kernel()
        barrier.wait()
        for _ in range(cells):
            start = time.perf_counter()
            assert kernel.execute(CODE, timeout=120) == "2"
            latencies.append(time.perf_counter() - start)
        kernel.close()
    return run_one


# ----------------------------------------------------------------- main

def row(metric, ours, peer, unit):
    return {"metric": metric, "ours": ours, "peer": peer, "unit": unit}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--jupyter-clients", type=int, default=20,
                        help="each needs its own kernel (~120 MB): 200 do not fit in memory")
    parser.add_argument("--cells", type=int, default=10)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="salvus-webbench-"))
    os.chmod(folder, 0o755)
    workers, web, server = [], None, None
    try:
        per_worker = str(args.clients // 2 + 16)
        workers = [WorkerProcess(folder / f"w{i}", "python", "--max-sessions", per_worker,
                                 "--spares", "4") for i in range(2)]
        for worker in workers:
            worker.wait_ready()
        web = WebProcess(folder / "web", [(f"w{i}", w.endpoint) for i, w in enumerate(workers)],
                         None, "--sessions-per-browser", "10000", "--sessions-per-ip", "10000")
        web.wait_ready()
        trips = salvus_round_trips(web, 500)
        wall_small, lat_small = concurrent(salvus_client(web), args.jupyter_clients, args.cells)
        wall, lat = concurrent(salvus_client(web), args.clients, args.cells)
        web.stop()
        for worker in workers:
            worker.stop()

        server = JupyterServer(folder)
        jtrips = jupyter_round_trips(server, 200)
        jwall, jlat = concurrent(jupyter_client(server), args.jupyter_clients, args.cells)
    finally:
        if web:
            web.stop()
        for worker in workers:
            worker.stop()
        if server:
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    n = args.jupyter_clients
    rows = [
        row("websocket 1+1 round trip, p50", p50(trips) * 1e3, p50(jtrips) * 1e3, "ms"),
        row("websocket 1+1 round trip, p99", percentile(trips, 99) * 1e3,
            percentile(jtrips, 99) * 1e3, "ms"),
        row(f"{n} concurrent clients, cell p50", p50(lat_small) * 1e3, p50(jlat) * 1e3, "ms"),
        row(f"{n} concurrent clients, cell p99", percentile(lat_small, 99) * 1e3,
            percentile(jlat, 99) * 1e3, "ms"),
        row(f"{n} clients x {args.cells} cells, wall", wall_small, jwall, "s"),
    ]
    print_table("Frontend: Salvus websocket vs Jupyter Server kernel websocket", rows)
    print(f"\n{args.clients} concurrent Salvus clients x {args.cells} cells: wall {wall:.2f} s, "
          f"cell p50 {p50(lat) * 1e3:.1f} ms, p99 {percentile(lat, 99) * 1e3:.1f} ms "
          f"(Jupyter would need {args.clients} kernels of ~120 MB each: "
          f"{args.clients * 0.12:.0f} GB)")
    rows.append(row(f"{args.clients} concurrent clients, cell p99 (Salvus only)",
                    percentile(lat, 99) * 1e3, float("nan"), "ms"))
    json_path, png_path = save("web", [r for r in rows if r["peer"] == r["peer"]])
    (json_path.parent / "web_200.json").write_text(json.dumps(
        {"clients": args.clients, "cells": args.cells, "wall_s": wall,
         "cell_p50_ms": p50(lat) * 1e3, "cell_p99_ms": percentile(lat, 99) * 1e3}, indent=2))
    print(f"wrote {json_path} and {png_path}")


if __name__ == "__main__":
    main()
