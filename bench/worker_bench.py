"""Worker benchmark: Salvus's fork-server worker vs a Jupyter kernel, same work.

Run: .venv/bin/python bench/worker_bench.py   (needs the bench extra:
pip install -e '.[bench]'). Prints tables with ratios and writes
bench/results/worker.json and worker.png. About 3-4 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import queue
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import p50, percentile, print_table, save, uss_bytes
from tests.worker_client import WorkerProcess

STACK = "import numpy, sympy, matplotlib\nimport matplotlib.pyplot\n"
SAGE_STACK = "from sage.all import *\n"
LINES = 10**5
SMALL = "sum(i * i for i in range(10**5))"


# ----------------------------------------------------------------- salvus

def salvus_new_session(client, n: int, pause: float = 0.05) -> list[float]:
    """Sessions requested one at a time, ``pause`` apart: the worker refills its
    spare children in quiet moments, as it would between real users."""
    times = []
    for _ in range(n):
        time.sleep(pause)
        start = time.perf_counter()
        session = client.start()
        result = client.run(session, "1+1")
        times.append(time.perf_counter() - start)
        assert result.text == "2", result.messages
        client.request("end", session=session)
    return times


def salvus_round_trip(client, session: str, n: int) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        result = client.run(session, "1+1")
        times.append(time.perf_counter() - start)
        assert result.text == "2"
    return times


def salvus_stream(client, session: str) -> tuple[float, int]:
    start = time.perf_counter()
    result = client.run(session, f"for i in range({LINES}): print(i)", timeout=120)
    elapsed = time.perf_counter() - start
    return elapsed, result.stdout.count("\n")


def session_uss(init_pid: int) -> int:
    """What one session costs: its init and its session process (and anything
    they started), each one's private memory."""
    children = Path(f"/proc/{init_pid}/task/{init_pid}/children").read_text().split()
    return uss_bytes(init_pid) + sum(uss_bytes(int(child)) for child in children)


def start(client) -> tuple[str, int]:
    """A new session and the pid of its init (as the worker's host sees it)."""
    reply = client.request("start")
    return reply["session"], reply["pid"]


def salvus_idle_uss(client, n: int = 5) -> float:
    sessions = [start(client) for _ in range(n)]
    for session, _ in sessions:
        client.run(session, "1")  # ready and has run something, as a real one has
    time.sleep(0.5)
    values = [session_uss(pid) for _, pid in sessions]
    for session, _ in sessions:
        client.request("end", session=session)
    return p50(values)


def salvus_many(worker, n: int) -> tuple[float, float]:
    clients = [worker.client() for _ in range(n)]

    def one(client):
        session, pid = start(client)
        result = client.run(session, SMALL)
        return session, result.text, session_uss(pid)

    began = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        outcomes = list(pool.map(one, clients))
    elapsed = time.perf_counter() - began
    assert all(text == str(sum(i * i for i in range(10**5))) for _, text, _ in outcomes)
    for client, (session, _, _) in zip(clients, outcomes, strict=True):
        client.request("end", session=session)
    return elapsed, sum(uss for _, _, uss in outcomes)


# ----------------------------------------------------------------- jupyter

class Kernel:
    def __init__(self):
        from jupyter_client.manager import start_new_kernel

        self.km, self.kc = start_new_kernel(kernel_name="python3", startup_timeout=120)
        self.closed = False

    def run(self, code: str, timeout: float = 120) -> tuple[str | None, str]:
        """(text/plain result, stdout) of one execution, via iopub until idle."""
        result, out = None, []

        def hook(message):
            nonlocal result
            kind = message["msg_type"]
            if kind == "execute_result":
                result = message["content"]["data"]["text/plain"]
            elif kind == "stream" and message["content"]["name"] == "stdout":
                out.append(message["content"]["text"])

        self.kc.execute_interactive(code, output_hook=hook, timeout=timeout)
        return result, "".join(out)

    def pid(self) -> int:
        return self.km.provisioner.process.pid

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.kc.stop_channels()
            self.km.shutdown_kernel(now=True)


def jupyter_new_session(n: int, stack: str) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        kernel = Kernel()
        try:
            kernel.run(stack)
            result, _ = kernel.run("1+1")
            times.append(time.perf_counter() - start)
            assert result == "2"
        finally:
            kernel.close()
    return times


def jupyter_many(n: int) -> tuple[float, float]:
    results: queue.Queue = queue.Queue()

    kernels: queue.Queue = queue.Queue()  # all of them close, also on a failure

    def one(_):
        kernel = Kernel()
        kernels.put(kernel)
        value, _ = kernel.run(SMALL)
        results.put((value, uss_bytes(kernel.pid())))

    start = time.perf_counter()
    try:
        with ThreadPoolExecutor(10) as pool:
            list(pool.map(one, range(n)))
        elapsed = time.perf_counter() - start
        outcomes = [results.get() for _ in range(n)]
    finally:
        while not kernels.empty():
            kernels.get().close()
    return elapsed, sum(uss for _, uss in outcomes)


# ----------------------------------------------------------------- main

def row(metric, ours, peer, unit):
    return {"metric": metric, "ours": ours, "peer": peer, "unit": unit}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--no-sage", action="store_true", help="skip the Sage rows")
    args = parser.parse_args()
    reps = 10 if args.quick else 1
    folder = Path(tempfile.mkdtemp(prefix="salvus-bench-"))
    rows = []
    running = contextlib.ExitStack()  # every worker and kernel goes, also on a failure

    def started(name: str, *args: str) -> WorkerProcess:
        worker = WorkerProcess(folder / name, *args)
        running.callback(worker.stop)
        worker.wait_ready()
        return worker

    try:
        worker = started("python", "python", "--max-sessions", "64")
        client = worker.client()
        new = salvus_new_session(client, 200 // reps)
        cold = started("cold", "python", "--spares", "0")
        new_cold = salvus_new_session(cold.client(), 100 // reps, pause=0)
        cold.stop()
        session = client.start()
        trip = salvus_round_trip(client, session, 1000 // reps)
        stream_s, lines = salvus_stream(client, session)
        assert lines == LINES, f"salvus delivered {lines} of {LINES} lines"
        uss = salvus_idle_uss(client)
        many_s, many_mem = salvus_many(worker, 50)
        worker.stop()

        kernel = Kernel()
        running.callback(kernel.close)
        kernel.run(STACK)
        jtrip = []
        for _ in range(300 // reps):
            start = time.perf_counter()
            kernel.run("1+1")
            jtrip.append(time.perf_counter() - start)
        start = time.perf_counter()
        _, out = kernel.run(f"for i in range({LINES}): print(i)")
        jstream_s = time.perf_counter() - start
        jlines = out.count("\n")
        time.sleep(0.5)
        juss = uss_bytes(kernel.pid())
        kernel.close()
        jnew = jupyter_new_session(max(2, 8 // reps), STACK)
        jmany_s, jmany_mem = jupyter_many(50 if not args.quick else 10)

        rows += [
            row("new session -> 1+1, p50 (python stack)", p50(new) * 1e3, p50(jnew) * 1e3, "ms"),
            row("new session -> 1+1, p99 (python stack)", percentile(new, 99) * 1e3,
                percentile(jnew, 99) * 1e3, "ms"),
            row("  same, no spare: fork on demand, p50", p50(new_cold) * 1e3, p50(jnew) * 1e3,
                "ms"),
            row("execute 1+1 round trip, p50", p50(trip) * 1e3, p50(jtrip) * 1e3, "ms"),
            row("execute 1+1 round trip, p99", percentile(trip, 99) * 1e3,
                percentile(jtrip, 99) * 1e3, "ms"),
            row(f"print {LINES} lines, wall", stream_s * 1e3, jstream_s * 1e3, "ms"),
            row("idle session memory (USS, python stack)", uss / 2**20, juss / 2**20, "MB"),
            row("50 sessions x small cell, wall", many_s, jmany_s, "s"),
            row("50 sessions x small cell, memory (USS sum)", many_mem / 2**20,
                jmany_mem / 2**20, "MB"),
        ]
        print(f"lines delivered: salvus {lines}/{LINES}, jupyter {jlines}/{LINES}")

        if not args.no_sage:
            sage = started("sage", "sage")
            sclient = sage.client()
            snew = salvus_new_session(sclient, 100 // reps)
            scold = started("sage-cold", "sage", "--spares", "0")
            snew_cold = salvus_new_session(scold.client(), 50 // reps, pause=0)
            scold.stop()
            suss = salvus_idle_uss(sclient)
            sage.stop()
            jsnew = jupyter_new_session(2, SAGE_STACK)
            skernel = Kernel()
            running.callback(skernel.close)
            skernel.run(SAGE_STACK)
            time.sleep(0.5)
            jsuss = uss_bytes(skernel.pid())
            skernel.close()
            rows += [
                row("new session -> 1+1, p50 (Sage)", p50(snew) * 1e3, p50(jsnew) * 1e3, "ms"),
                row("new session -> 1+1, p99 (Sage)", percentile(snew, 99) * 1e3,
                    percentile(jsnew, 99) * 1e3, "ms"),
                row("  same, no spare: fork on demand, p50", p50(snew_cold) * 1e3,
                    p50(jsnew) * 1e3, "ms"),
                row("idle session memory (USS, Sage)", suss / 2**20, jsuss / 2**20, "MB"),
            ]
    finally:
        running.close()
        shutil.rmtree(folder, ignore_errors=True)
    print_table("Worker: Salvus fork server vs Jupyter kernel (same machine, same run)", rows)
    json_path, png_path = save("worker", rows)
    print(f"\nwrote {json_path} and {png_path}")


if __name__ == "__main__":
    main()
