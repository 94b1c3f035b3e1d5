"""Stateless frontends: figures of the bus and of sessions served by any frontend.

On an appliance with two frontends and two workers (python engine):

- message latency across frontends: a frontend's Bus.message (a third
  frontend in this process) to a browser's websocket on web1;
- failover: web0 is killed (kill -9) while a cell prints; the client
  reconnects to web1 at once, as the page does, and resumes: the time from
  the kill to the next line, and that no line is lost or doubled;
- output through the new path: 10^5 printed lines to the websocket.

Jupyter has no counterpart for the first one. For the second,
bench/jupyter_restart.py measures what a notebook keeps when its
jupyter_server is killed or restarted during the same cell (the kernel dies
with the server, and the rest of the cell's output with it); it runs after
the figures here and its result is printed beside them.
bench/web_bench.py has the round trips side by side with Jupyter.

    python bench/bus_bench.py [--messages N] [--failovers N]

writes bench/results/bus.json.
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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from simple_websocket import ConnectionClosed  # noqa: E402

from tests.helpers import (  # noqa: E402
    kill_everything_of,
    running_pid,
    started_appliance,
    wait_for,
)
from tests.web_client import Browserish, Frontend  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def message_latency(data: Path, base: int, count: int) -> list[float]:
    import gevent

    from sage_worker import curve
    from web import bus

    browser = Browserish(Frontend(base + 1), "browser=bench-latency")
    browser.open()
    frontends = data / "etc" / "frontends.json"
    original = frontends.read_text()
    pair = curve.load_pair(data / "secrets" / "curve" / "web.key_secret")
    directory = json.loads(original)
    endpoint = f"tcp://127.0.0.1:{base + 450}"
    directory["frontends"].append({"name": "webX", "bus": endpoint,
                                   "key": pair.public.decode(), "http": ""})
    peer = bus.Bus("webX", pair, {pair.public}, endpoint, frontends, lambda m: 0,
                   lambda line: None)
    latencies = []
    try:
        frontends.write_text(json.dumps(directory))
        peer.start()
        with gevent.Timeout(30):
            while {"web0", "web1"} - set(peer.live_peers()):
                gevent.sleep(0.1)
        gevent.sleep(1.5)  # both read the file again and subscribe to us
        for i in range(count):
            start = time.perf_counter()
            peer.message("browser", "bench-latency", f"m{i}")
            gevent.sleep(0)  # let the publisher send
            while browser.receive(10)["type"] != "announcement":
                pass
            latencies.append(time.perf_counter() - start)
    finally:
        frontends.write_text(original)
        peer.close()
        browser.close()
    return latencies


def failover(data: Path, base: int) -> tuple[float, bool]:
    """(seconds from the kill to the next line on web1, every line exactly once)."""
    lines = 400
    page = Browserish(Frontend(base), "browser=bench-failover")
    page.open()
    page.send(type="execute", cell="c", code=f"import time\nfor i in range({lines}):\n"
                                             "    print(i)\n    time.sleep(0.01)")
    got = []
    while not any(m["type"] == "stream" for m in got):
        got.append(page.receive(30))
    os.kill(running_pid(data, "web0"), signal.SIGKILL)
    killed = time.perf_counter()
    with contextlib.suppress(ConnectionClosed, TimeoutError):
        while True:
            got.append(page.receive(2))
    again = Browserish(Frontend(base + 1), "browser=bench-failover")
    again.open(page.session, page.last_seq)
    first = again.receive(30)
    resumed = time.perf_counter() - killed
    rest = [first] if first.get("cell") == "c" else []
    if first["type"] != "done":
        rest += again.until_done("c", 60)
    page.close()
    again.close()
    text = "".join(m["text"] for m in got + rest if m.get("cell") == "c"
                   and m["type"] == "stream")
    wait_for(lambda: running_pid(data, "web0"), 30, what="web0 back")
    return resumed, text == "".join(f"{i}\n" for i in range(lines))


def output_path(base: int, runs: int = 5) -> list[float]:
    browser = Browserish(Frontend(base), "browser=bench-output")
    browser.open()
    times = []
    for i in range(runs):
        start = time.perf_counter()
        messages = browser.run(f"o{i}", "for i in range(10**5): print(i)")
        times.append(time.perf_counter() - start)
        assert messages[-1]["status"] == "ok"
    browser.close()
    return times


def jupyter_failover(runs: int) -> dict:
    """The same cell in a notebook whose jupyter_server is killed (kill -9)
    and started again (bench/jupyter_restart.py)."""
    from bench import jupyter_restart

    root = Path(tempfile.mkdtemp(prefix="salvus-busbench-jupyter-"))
    try:
        cases = [jupyter_restart.run_case(root, "session", "kill")
                 for _ in range(max(1, min(runs, 3)))]
    finally:
        kill_everything_of(root)
        shutil.rmtree(root, ignore_errors=True)
    return {"lines": jupyter_restart.LINES, "n": len(cases),
            "lines_received": [c["lines_received"] for c in cases],
            "execute_reply": sum(c["execute_reply"] for c in cases)}


def plain_python() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "for i in range(10**5): print(i)"],
                   stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--failovers", type=int, default=5)
    args = parser.parse_args()
    with started_appliance("salvus-busbench-", "--web", "2", "--workers", "2",
                           config={("worker", "engine"): "python"}) as (data, base, _):
        latency = message_latency(data, base, args.messages)
        failovers = [failover(data, base) for _ in range(args.failovers)]
        output = output_path(base)
    python = plain_python()
    jupyter = jupyter_failover(args.failovers)
    results = {
        "message_latency_ms": {"p50": percentile(latency, 0.5) * 1000,
                               "p99": percentile(latency, 0.99) * 1000, "n": len(latency)},
        "failover_s": {"p50": statistics.median(t for t, _ in failovers),
                       "max": max(t for t, _ in failovers),
                       "every_line_once": all(ok for _, ok in failovers),
                       "n": len(failovers)},
        "jupyter_server_killed": jupyter,
        "output_1e5_lines_s": {"median": statistics.median(output), "runs": output,
                               "plain_python_s": python},
    }
    print(f"message across frontends   p50 {results['message_latency_ms']['p50']:.2f} ms  "
          f"p99 {results['message_latency_ms']['p99']:.2f} ms")
    print(f"failover (kill -9 web0)    p50 {results['failover_s']['p50']:.2f} s  max "
          f"{results['failover_s']['max']:.2f} s  every line once: "
          f"{results['failover_s']['every_line_once']}")
    print(f"  Jupyter (kill -9 of jupyter_server, notebook reconnects): lines kept "
          f"{'/'.join(map(str, jupyter['lines_received']))} of {jupyter['lines']}, "
          f"execute_reply in {jupyter['execute_reply']} of {jupyter['n']} runs")
    print(f"10^5 lines to the page     {results['output_1e5_lines_s']['median'] * 1000:.0f} ms"
          f"  ({results['output_1e5_lines_s']['median'] / python:.1f}x plain python to "
          f"/dev/null, {python * 1000:.0f} ms)")
    out = ROOT / "bench" / "results" / "bus.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
