"""haproxy with TLS in front of the frontends (issue 13): what it costs and
what it buys, on one appliance (``init --web 2 --workers 2 --haproxy 2``,
python engine), all in the same run:

1. latency added: the ``1+1`` round trip (execute -> done) of a websocket
   client on an open session, directly to a frontend (ws://127.0.0.1:B/ws)
   and through haproxy0 (wss://127.0.0.1:B+700/ws), the two interleaved
   trip by trip;
2. failover gap while a cell prints a line every 10 ms: kill -9 of (a) the
   frontend that serves the websocket, the client reconnecting through the
   same haproxy, (b) haproxy0, the client reconnecting through haproxy1, and
   as the peer (c) the frontend with the client connected directly to it,
   reconnecting directly to the other frontend (bench/bus_bench.py's case).
   Gap = from the kill to the first output message of the cell after
   reopening the session with ``{"type":"open","session":ID,"last_seq":N}``;
   every line must arrive exactly once. The client reconnects at once (every
   50 ms until it gets in); the page waits 250 ms before its first retry,
   which it would add;
3. cells per second at p99 <= 100 ms: N concurrent websocket clients (one
   asyncio loop in this process, sharing the 2 cores with the appliance),
   each running ``1+1`` back to back through haproxy0; N is raised until the
   cell p99 exceeds 100 ms. With two frontends behind haproxy, then with one
   (web1 stopped and taken out by haproxy's health check).

A websocket closed under a client during 3 is counted (``dropped``), its
step does not count, and haproxy0's log of the step is printed: in some runs
haproxy0 took web0 out because its /health answered 503, which closed the
websockets on it (on-marked-down shutdown-sessions).

The peer for 1 and 2 is "direct": no proxy, ws:// straight to a frontend.
Jupyter has no comparable TLS proxy setup built in (jupyter_server terminates
TLS itself with --certfile, one process, nothing to fail over to), so it has
no column here. For 3 the comparison is 2 frontends ("salvus" column) vs
1 frontend ("1 frontend" column), both behind haproxy0.

    python bench/haproxy_bench.py [--trips N] [--failovers N]

writes bench/results/haproxy.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import ssl
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from simple_websocket import Client as WsClient  # noqa: E402
from simple_websocket import ConnectionClosed  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402
from websockets.exceptions import ConnectionClosedError, InvalidStatus  # noqa: E402

from bench.common import percentile, print_table, save  # noqa: E402
from tests.helpers import run, running_pid, started_appliance, wait_for  # noqa: E402
from tests.web_client import Browserish  # noqa: E402

CODE = "1+1"
LINES = 300  # printed 10 ms apart: 3 s of output


def unverified() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # our self-signed certificate
    return context


TLS = unverified()


class Page(Browserish):
    """Browserish on any URL, ws:// or wss://."""

    def __init__(self, url: str, cookie: str):  # no super(): it dials ws:// only
        self.cookie = cookie
        self.session = None
        self.ws = WsClient.connect(url, headers={"Cookie": f"salvus_{cookie}"},
                                   ssl_context=TLS if url.startswith("wss") else None)
        self.last_seq = 0
        self.backlog = []


def urls(base: int) -> dict[str, str]:
    return {"direct0": f"ws://127.0.0.1:{base}/ws", "direct1": f"ws://127.0.0.1:{base + 1}/ws",
            "haproxy0": f"wss://127.0.0.1:{base + 700}/ws",
            "haproxy1": f"wss://127.0.0.1:{base + 701}/ws"}


# ----------------------------------------------------------------- 1. latency

def round_trips(base: int, n: int) -> tuple[list[float], list[float]]:
    """(direct, through haproxy0) seconds, interleaved trip by trip."""
    direct = Page(urls(base)["direct0"], f"browser=bench-rt-{uuid.uuid4().hex}")
    proxied = Page(urls(base)["haproxy0"], f"browser=bench-rt-{uuid.uuid4().hex}")
    times: dict[str, list[float]] = {"direct": [], "haproxy": []}
    try:
        for page in (direct, proxied):
            page.open()
            for i in range(20):  # warm: the session exists, the paths are hot
                page.run(f"w{i}", CODE)
        for i in range(n):
            for name, page in (("direct", direct), ("haproxy", proxied)):
                start = time.perf_counter()
                messages = page.run(f"c{i}", CODE)
                times[name].append(time.perf_counter() - start)
                assert messages[-1]["status"] == "ok", messages
    finally:
        direct.close()
        proxied.close()
    return times["direct"], times["haproxy"]


# ----------------------------------------------------------------- 2. failover

def state(data: Path, server: str) -> str:
    """What haproxy0 last said of ``server``: "UP" (also when nothing yet) or "DOWN"."""
    log = data / "logs" / "haproxy0.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    up, down = text.rfind(f"frontends/{server} is UP"), text.rfind(f"frontends/{server} is DOWN")
    return "DOWN" if down > up else "UP"


def wait_state(data: Path, server: str, wanted: str) -> None:
    wait_for(lambda: state(data, server) == wanted, timeout=30,
             what=f"haproxy0 to see {server} {wanted}")


def failover(data: Path, base: int, mode: str) -> tuple[float, bool]:
    """mode: "frontend" (kill the frontend behind haproxy0, reconnect through
    haproxy0), "haproxy" (kill haproxy0, reconnect through haproxy1),
    "direct" (kill web0 with the client on it, reconnect to web1).
    Returns (seconds from the kill to the cell's next output, every line once)."""
    u = urls(base)
    first_url, again_url, victim = {
        "frontend": (u["haproxy0"], u["haproxy0"], "web0"),
        "haproxy": (u["haproxy0"], u["haproxy1"], "haproxy0"),
        "direct": (u["direct0"], u["direct1"], "web0"),
    }[mode]
    cookie = f"browser=bench-fo-{uuid.uuid4().hex}"
    if mode == "frontend":  # web1 down while connecting: the websocket is web0's
        run(data, "stop", "web1")
        wait_state(data, "web1", "DOWN")
        page = Page(first_url, cookie)
        page.open()
        run(data, "start", "web1")
        wait_state(data, "web1", "UP")
    else:
        page = Page(first_url, cookie)
        page.open()
    page.run("warm", CODE)
    cell = f"f{uuid.uuid4().hex[:8]}"
    page.send(type="execute", cell=cell, code=f"import time\nfor i in range({LINES}):\n"
                                              "    print(i)\n    time.sleep(0.01)")
    got = []
    while sum(m["type"] == "stream" for m in got) < 30:  # well into the output
        got.append(page.receive(30))
    os.kill(running_pid(data, victim), signal.SIGKILL)
    killed = time.perf_counter()
    # Kept down (else supervisord restarts it), without holding up the client.
    stopper = threading.Thread(target=run, args=(data, "stop", victim), daemon=True)
    stopper.start()
    with contextlib.suppress(ConnectionClosed, TimeoutError, OSError):
        while True:
            got.append(page.receive(5))
    page.close()
    deadline = time.monotonic() + 60
    while True:
        try:
            again = Page(again_url, cookie)
            attached = again.open(page.session, page.last_seq)
            if attached["type"] == "attached":
                break
            again.close()
        except (ConnectionError, ConnectionClosed, OSError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"could not reconnect through {again_url}")
        time.sleep(0.05)
    rest = []
    while True:
        message = again.receive(30)
        if message.get("cell") == cell:
            resumed = time.perf_counter() - killed
            rest.append(message)
            break
    if message["type"] != "done":
        rest += again.until_done(cell, 60)
    again.close()
    text = "".join(m["text"] for m in got + rest if m.get("cell") == cell
                   and m["type"] == "stream")
    stopper.join(60)
    run(data, "start", victim)
    wait_for(lambda: running_pid(data, victim), 30, what=f"{victim} back")
    if victim == "web0":  # haproxy0 has it in again (if it had taken it out)
        wait_state(data, "web0", "UP")
    return resumed, text == "".join(f"{i}\n" for i in range(LINES))


# ----------------------------------------------------------------- 3. cells/s

async def _client(url: str, i: int, cells: int, ready: asyncio.Barrier,
                  latencies: list[float], sessions: dict[int, tuple[str, int]],
                  finished: list[float], drops: list[int]) -> None:
    for _ in range(100):  # 503 while haproxy has no frontend in: wait for one
        try:
            ws = await connect(url, ssl=TLS, max_size=None, additional_headers={
                "Cookie": f"salvus_browser=bench-load-{i}"})
            break
        except InvalidStatus:
            await asyncio.sleep(0.1)
    async with ws:
        known = sessions.get(i)
        await ws.send(json.dumps({"type": "open", **(
            {"session": known[0], "last_seq": known[1]} if known else {})}))
        seq = known[1] if known else 0
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == "protocol_error":
                raise AssertionError(message)
            if message["type"] == "attached":
                session = message["session"]
                break

        async def run_cell(cell: str) -> dict:
            nonlocal seq
            await ws.send(json.dumps({"type": "execute", "cell": cell, "code": CODE}))
            while True:
                message = json.loads(await ws.recv())
                seq = max(seq, message.get("seq", 0))
                if message.get("cell") == cell and message["type"] == "done":
                    return message

        await run_cell(f"warm{uuid.uuid4().hex[:6]}")
        await ready.wait()
        try:
            for k in range(cells):
                start = time.perf_counter()
                done = await run_cell(f"c{k}")
                latencies.append(time.perf_counter() - start)
                assert done["status"] == "ok", done
        except ConnectionClosedError:  # counted; the step's figures say so
            drops.append(i)
        finished.append(time.perf_counter())
        sessions[i] = (session, seq)


async def _load(url: str, clients: int, cells: int, sessions,
                drops: list[int]) -> tuple[float, list[float]]:
    latencies: list[float] = []
    finished: list[float] = []
    ready = asyncio.Barrier(clients + 1)
    tasks = [asyncio.create_task(_client(url, i, cells, ready, latencies, sessions, finished,
                                         drops))
             for i in range(clients)]
    await ready.wait()
    start = time.perf_counter()
    await asyncio.gather(*tasks)
    return max(finished) - start, latencies


def sweep(data: Path, url: str, steps: list[int], sessions: dict, label: str) -> list[dict]:
    """Raise N until p99 > 100 ms; each step: N clients x max(10, 400 / N) cells.
    A websocket closed under a client ends that client's run and is counted
    (``dropped``); haproxy0's log lines of the step are printed then."""
    found = []
    log = data / "logs" / "haproxy0.log"
    for clients in steps:
        cells = max(10, 400 // clients)
        drops: list[int] = []
        wait_state(data, "web0", "UP")  # haproxy0 has taken it out under load at times
        seen = log.stat().st_size if log.exists() else 0
        wall, latencies = asyncio.run(asyncio.wait_for(
            _load(url, clients, cells, sessions, drops), 300))
        if drops:
            with open(log, errors="replace") as f:
                f.seek(seen)
                print(f"  {len(drops)} websockets closed; haproxy0 said:\n{f.read()[-3000:]}")
        step = {"clients": clients, "cells": len(latencies), "dropped": len(drops),
                "cells_per_s": len(latencies) / wall,
                "p50_ms": percentile(latencies, 50) * 1e3,
                "p99_ms": percentile(latencies, 99) * 1e3}
        found.append(step)
        print(f"  {label}: {clients:3d} clients  {step['cells_per_s']:7.0f} cells/s  "
              f"p50 {step['p50_ms']:6.1f} ms  p99 {step['p99_ms']:6.1f} ms  dropped {len(drops)}",
              flush=True)
        if step["p99_ms"] > 100:
            break
    return found


def best(steps: list[dict]) -> dict:
    ok = [s for s in steps if s["p99_ms"] <= 100 and not s["dropped"]]
    return max(ok, key=lambda s: s["cells_per_s"]) if ok else \
        {"clients": 0, "cells_per_s": 0.0, "p99_ms": float("nan")}


# ----------------------------------------------------------------- main

def row(metric, ours, peer, unit, better="lower", **extra):
    return {"metric": metric, "ours": ours, "peer": peer, "unit": unit, "better": better,
            **extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trips", type=int, default=400)
    parser.add_argument("--failovers", type=int, default=5)
    parser.add_argument("--steps", default="1,2,4,8,12,16,24,32,48,64")
    parser.add_argument("--rounds", type=int, default=2,
                        help="sweeps of each (2 frontends, then 1), alternated; the best counts")
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    config = {("worker", "engine"): "python", ("worker", "max_sessions"): "160",
              ("worker", "spares"): "4", ("web", "sessions_per_browser"): "10000",
              ("web", "sessions_per_ip"): "100000"}
    gaps: dict[str, list[tuple[float, bool]]] = {"direct": [], "frontend": [], "haproxy": []}
    with contextlib.ExitStack() as stack:
        for attempt in range(3):  # free_base_port does not look at +600/+700
            try:
                data, base, _ = stack.enter_context(started_appliance(
                    "salvus-haproxybench-", "--web", "2", "--workers", "2", "--haproxy", "2",
                    config=config))
                break
            except AssertionError as err:
                if "in use" not in str(err) or attempt == 2:
                    raise
                print("a port was taken: another base port", flush=True)
        direct, proxied = round_trips(base, args.trips)
        print(f"1+1 round trip: direct p50 {percentile(direct, 50) * 1e3:.2f} ms, through "
              f"haproxy p50 {percentile(proxied, 50) * 1e3:.2f} ms", flush=True)
        for _ in range(args.failovers):
            for mode in gaps:
                gaps[mode].append(failover(data, base, mode))
                print(f"  failover {mode}: {gaps[mode][-1][0] * 1e3:.0f} ms, every line "
                      f"once: {gaps[mode][-1][1]}", flush=True)
        # Every client's session first (not timed), and the workers' spare
        # sessions refilled, so no step pays for starting sessions.
        sessions: dict[int, tuple[str, int]] = {}
        asyncio.run(_load(urls(base)["haproxy0"], max(steps), 1, sessions, []))
        time.sleep(10)
        two, one = [], []
        for _ in range(args.rounds):  # alternated: neither gets the quieter machine
            two += [sweep(data, urls(base)["haproxy0"], steps, sessions, "2 frontends")]
            run(data, "stop", "web1")
            wait_state(data, "web1", "DOWN")
            one += [sweep(data, urls(base)["haproxy0"], steps, sessions, "1 frontend")]
            run(data, "start", "web1")
            wait_state(data, "web1", "UP")

    p = lambda values, q: percentile(values, q) * 1e3  # noqa: E731
    rows = [
        row("1+1 round trip, p50", p(proxied, 50), p(direct, 50), "ms", n=len(direct)),
        row("1+1 round trip, p99", p(proxied, 99), p(direct, 99), "ms", n=len(direct)),
    ]
    added = [(p(proxied, q) - p(direct, q)) for q in (50, 99)]
    peer_gap = [t * 1e3 for t, _ in gaps["direct"]]
    for mode, what in (("frontend", "frontend killed"), ("haproxy", "haproxy killed")):
        values = [t * 1e3 for t, _ in gaps[mode]]
        once = all(ok for _, ok in gaps[mode])
        rows.append(row(f"failover gap, {what}, p50", statistics.median(values),
                        statistics.median(peer_gap), "ms", n=len(values), every_line_once=once,
                        peer_every_line_once=all(ok for _, ok in gaps["direct"])))
        rows.append(row(f"failover gap, {what}, max", max(values), max(peer_gap), "ms",
                        n=len(values), every_line_once=once))
    print_table("haproxy with TLS vs direct to the frontend (the salvus column is through "
                "haproxy)", rows, peer="direct")
    print(f"added by haproxy+TLS: p50 {added[0]:+.2f} ms, p99 {added[1]:+.2f} ms")
    print("failover peer (direct): client on web0 directly, web0 killed, reconnects "
          "directly to web1; every line once: "
          + ", ".join(f"{m} {all(ok for _, ok in gaps[m])}" for m in gaps))
    b2 = max((best(x) for x in two), key=lambda b: b["cells_per_s"])
    b1 = max((best(x) for x in one), key=lambda b: b["cells_per_s"])
    load = [row("cells/s at cell p99 <= 100 ms", b2["cells_per_s"], b1["cells_per_s"],
                "cells/s", "higher", clients=b2["clients"], peer_clients=b1["clients"],
                p99_ms=b2["p99_ms"], peer_p99_ms=b1["p99_ms"], steps=two, peer_steps=one)]
    print_table("Cells per second through haproxy0 at p99 <= 100 ms: salvus column = 2 "
                "frontends behind haproxy, other = 1 frontend", load, peer="1 frontend")
    print("best of each round: 2 frontends " + ", ".join(
        f"{best(x)['cells_per_s']:.0f}" for x in two) + "; 1 frontend " + ", ".join(
        f"{best(x)['cells_per_s']:.0f}" for x in one) + " cells/s")
    print(f"2 frontends: {b2['cells_per_s']:.0f} cells/s with {b2['clients']} clients; "
          f"1 frontend: {b1['cells_per_s']:.0f} cells/s with {b1['clients']} clients")
    json_path, png_path = save("haproxy", rows + load)
    png_path.unlink(missing_ok=True)  # common.chart labels its bars "jupyter": not ours
    print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
