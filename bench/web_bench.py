"""Frontend benchmark: a websocket client -> frontend -> worker -> back, side by
side with Jupyter Server's kernel websocket doing the same work.

Run: .venv/bin/python bench/web_bench.py (needs the bench extra, which brings
jupyter_server). Prints a table with ratios and writes bench/results/web.json
and web.png. About 2-3 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simple_websocket import Client
from websockets.asyncio.client import connect

from bench.common import p50, percentile, print_table, save
from tests.helpers import terminate
from tests.web_client import Browserish, WebProcess, free_port
from tests.worker_client import WorkerProcess, make_keys

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


async def _salvus_client(port: int, cells: int, ready: asyncio.Barrier,
                         latencies: list[float], think: float = 0.0) -> None:
    async with connect(f"ws://127.0.0.1:{port}/ws", max_size=None,
                       additional_headers={"Cookie": f"salvus_browser={uuid.uuid4().hex}"}
                       ) as ws:
        await ws.send(json.dumps({"type": "open"}))
        assert json.loads(await ws.recv())["type"] == "attached"

        notices = []

        async def run(cell: str) -> dict:
            await ws.send(json.dumps({"type": "execute", "cell": cell, "code": CODE}))
            while True:
                message = json.loads(await ws.recv())
                if message["type"] == "notice":
                    notices.append(message["text"])
                if message.get("cell") == cell and message["type"] == "done":
                    return message

        await run("warm")  # the session exists before the clock starts
        await ready.wait()
        for i in range(cells):
            if think:  # a person reads the result before running the next cell
                await asyncio.sleep(random.uniform(0.5 * think, 1.5 * think))
            start = time.perf_counter()
            done = await run(f"c{i}")
            latencies.append(time.perf_counter() - start)
            assert done["status"] == "ok", (done, notices)
        finished.append(time.perf_counter())


finished: list[float] = []  # when each client ran its last cell (closing is not timed)


async def _many(make_client, clients: int, cells: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    started: list[float] = []
    ready = asyncio.Barrier(clients + 1)
    tasks = [asyncio.create_task(make_client(cells, ready, latencies)) for _ in range(clients)]
    await ready.wait()
    started.append(time.perf_counter())
    finished.clear()
    await asyncio.gather(*tasks)
    return max(finished) - started[0], latencies


def concurrent(make_client, clients: int, cells: int) -> tuple[float, list[float]]:
    """``clients`` websocket clients in one asyncio loop (a light load generator:
    a thread per client would measure the GIL), each running ``cells`` small
    cells once all are connected; returns (wall, per-cell latencies)."""
    return asyncio.run(asyncio.wait_for(_many(make_client, clients, cells), 600))


def salvus_client(web: WebProcess, think: float = 0.0):
    return lambda cells, ready, latencies: _salvus_client(web.port, cells, ready, latencies,
                                                          think)


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
        terminate(self.proc, timeout=20)
        self.log.close()


def execute_request(msg_id: str, session: str, code: str) -> dict:
    """An execute_request as JupyterLab sends it over the kernel websocket."""
    return {
        "header": {"msg_id": msg_id, "username": "bench", "session": session,
                   "msg_type": "execute_request", "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False},
    }


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
        self.ws.send(json.dumps(execute_request(msg_id, self.session, code)))
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


async def _jupyter_client(server: JupyterServer, cells: int, ready: asyncio.Barrier,
                          latencies: list[float]) -> None:
    kernel_id = (await asyncio.to_thread(server.api, "POST", "/api/kernels",
                                         {"name": "python3"}))["id"]
    session = uuid.uuid4().hex
    url = f"ws://127.0.0.1:{server.port}/api/kernels/{kernel_id}/channels?session_id={session}"
    try:
        async with connect(url, max_size=None, additional_headers={
                "Authorization": f"token {server.token}"}) as ws:

            async def run(timeout: float) -> str | None:
                msg_id = uuid.uuid4().hex
                await ws.send(json.dumps(execute_request(msg_id, session, CODE)))
                result, idle, reply = None, False, False
                while not (idle and reply):
                    message = json.loads(await asyncio.wait_for(ws.recv(), timeout))
                    if message.get("parent_header", {}).get("msg_id") != msg_id:
                        continue
                    kind = message["msg_type"]
                    if kind == "execute_result":
                        result = message["content"]["data"]["text/plain"]
                    elif kind == "status":
                        idle = message["content"]["execution_state"] == "idle"
                    elif kind == "execute_reply":
                        reply = True
                return result

            for _ in range(60):  # wait for the kernel to come up
                try:
                    await run(5)
                    break
                except TimeoutError:
                    continue
            await ready.wait()
            for _ in range(cells):
                start = time.perf_counter()
                assert await run(120) == "2"
                latencies.append(time.perf_counter() - start)
            finished.append(time.perf_counter())
    finally:
        await asyncio.to_thread(server.api, "DELETE", f"/api/kernels/{kernel_id}")


def jupyter_client(server: JupyterServer):
    return lambda cells, ready, latencies: _jupyter_client(server, cells, ready, latencies)


# ----------------------------------------------------------------- main

def row(metric, ours, peer, unit):
    return {"metric": metric, "ours": ours, "peer": peer, "unit": unit}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--jupyter-clients", type=int, default=20,
                        help="each needs its own kernel (~120 MB): 200 do not fit in memory")
    parser.add_argument("--cells", type=int, default=10)
    parser.add_argument("--think", type=float, default=0.5,
                        help="mean seconds between a client's cells in the paced run")
    parser.add_argument("--saturation-only", action="store_true",
                        help="only the back-to-back run of --clients (no Jupyter, no files)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="salvus-webbench-"))
    os.chmod(folder, 0o755)
    workers, web, server = [], None, None
    try:
        # Sessions linger after their clients leave: room for every run's.
        runs = 3 if args.saturation_only else 2
        per_worker = str((args.clients * runs + args.jupyter_clients) // 2 + 16)
        keys = make_keys(folder / "keys")
        workers = [WorkerProcess(folder / f"w{i}", "python", "--max-sessions", per_worker,
                                 "--spares", "4", uids=int(per_worker) + 8, keys=keys)
                   for i in range(2)]
        for worker in workers:
            worker.wait_ready()
        web = WebProcess(folder / "web", [(f"w{i}", w.endpoint) for i, w in enumerate(workers)],
                         None, "--sessions-per-browser", "10000", "--sessions-per-ip", "10000",
                         keys=keys)
        web.wait_ready()
        if args.saturation_only:
            for _ in range(3):
                wall, lat = concurrent(salvus_client(web), args.clients, args.cells)
                print(f"saturation: p50 {p50(lat) * 1e3:.1f} ms, p99 "
                      f"{percentile(lat, 99) * 1e3:.1f} ms, "
                      f"{args.clients * args.cells / wall:.0f} cells/s")
            return
        trips = salvus_round_trips(web, 500)
        wall_small, lat_small = concurrent(salvus_client(web), args.jupyter_clients, args.cells)
        wall, lat = concurrent(salvus_client(web), args.clients, args.cells)
        paced_wall, paced = concurrent(salvus_client(web, args.think), args.clients, args.cells)
        web.stop()
        for worker in workers:
            worker.stop()

        server = JupyterServer(folder)
        jtrips = jupyter_round_trips(server, 200)
        jwall, jlat = concurrent(jupyter_client(server), args.jupyter_clients, args.cells)
    except BaseException:
        if web:  # what the frontend said, for whoever reads the failure
            print(web.log.read_text()[-4000:], file=sys.stderr)
        raise
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
    print(f"\n{args.clients} concurrent Salvus clients x {args.cells} cells "
          f"(Jupyter would need {args.clients} kernels of ~120 MB each: "
          f"{args.clients * 0.12:.0f} GB, so it has no column here):")
    print(f"  paced ({args.think} s think time): cell p50 {p50(paced) * 1e3:.1f} ms, "
          f"p99 {percentile(paced, 99) * 1e3:.1f} ms, wall {paced_wall:.2f} s")
    print(f"  back to back (saturation): cell p50 {p50(lat) * 1e3:.1f} ms, "
          f"p99 {percentile(lat, 99) * 1e3:.1f} ms, wall {wall:.2f} s, "
          f"{args.clients * args.cells / wall:.0f} cells/s")
    json_path, png_path = save("web", rows)
    (json_path.parent / "web_200.json").write_text(json.dumps(
        {"clients": args.clients, "cells": args.cells, "think_s": args.think,
         "paced": {"wall_s": paced_wall, "cell_p50_ms": p50(paced) * 1e3,
                   "cell_p99_ms": percentile(paced, 99) * 1e3},
         "saturation": {"wall_s": wall, "cell_p50_ms": p50(lat) * 1e3,
                        "cell_p99_ms": percentile(lat, 99) * 1e3}}, indent=2) + "\n")
    print(f"wrote {json_path} and {png_path}")


if __name__ == "__main__":
    main()
