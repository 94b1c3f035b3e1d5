"""Chaos bench: what each attack costs everyone else.

An appliance started by salvusctl (two python workers, one frontend; the
settings of tests/chaos.py), a canary running ``1+1`` through the API every
half second from an address of its own, and one attack at a time, sustained
for a while (an attack from a session is repeated for the whole time). Prints
the canary's p50/p95 and failures per attack and writes bench/results/chaos.json.

Run: .venv/bin/python bench/chaos_bench.py [--seconds 20]   (as root; ~6 minutes)
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RESULTS
from tests import chaos
from tests.helpers import run, wait_for

SESSION_ATTACKS = {
    "fork bomb": "import os, time\nwhile True:\n    if os.fork() == 0:\n"
                 "        time.sleep(100)\n        os._exit(0)",
    "memory bomb": "blocks = []\nwhile True: blocks.append(bytearray(64 << 20))",
    "CPU burn (2 sessions)": "while True: pass",
    "infinite output": "while True: print('x' * 999)",
}


def repeat(port: int, code: str, seconds: float, parallel: int = 1) -> None:
    """The attacker runs ``code`` again and again, ``parallel`` at once."""
    deadline = time.monotonic() + seconds

    def loop() -> None:
        while time.monotonic() < deadline:
            chaos.execute(port, code, timeout=max(1.0, min(8.0, deadline - time.monotonic())))

    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        list(pool.map(lambda _: loop(), range(parallel)))


def all_running(data: Path) -> bool:
    rows = json.loads(run(data, "status", "--json", check=False).stdout)
    return all(row["state"] == "RUNNING" for row in rows)


def kill_9(data: Path, name: str, seconds: float) -> None:
    old = chaos.pid_of(data, name, run)
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: all_running(data) and chaos.pid_of(data, name, run) != old,
             timeout=120, what=f"{name} back")
    time.sleep(max(0.0, seconds - 5))  # the canary watches the recovered appliance too


def sigstop(data: Path, name: str, seconds: float, whole_family: bool = False) -> None:
    pid = chaos.pid_of(data, name, run)
    members = chaos.family(pid) if whole_family else [pid]
    for member in members:
        os.kill(member, signal.SIGSTOP)
    try:
        time.sleep(seconds / 2)
    finally:
        for member in members:
            os.kill(member, signal.SIGCONT)
    time.sleep(seconds / 2)


def slow_api_flood(port: int, seconds: float) -> None:
    slow = {"code": "import time\ntime.sleep(4)", "timeout": 8}
    deadline = time.monotonic() + seconds

    def caller(index: int) -> None:
        while time.monotonic() < deadline:
            chaos.post(port, "/api/execute", slow, source=f"127.0.1.{index}")

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(1, 41)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="how long each attack lasts")
    args = parser.parse_args()
    seconds = args.seconds
    results = []
    with chaos.appliance() as (data, port):
        attacks = [("no attack", lambda: time.sleep(seconds))]
        for name, code in SESSION_ATTACKS.items():
            parallel = 2 if name.startswith("CPU") else 1
            attacks.append((name, lambda c=code, n=parallel: repeat(port, c, seconds, n)))
        attacks.append(("40 slow API calls at once", lambda: slow_api_flood(port, seconds)))
        for name in ("worker0", "web0", "postgres", "memcached", "registry"):
            attacks.append((f"kill -9 {name}", lambda n=name: kill_9(data, n, seconds)))
        attacks.append(("SIGSTOP worker0", lambda: sigstop(data, "worker0", seconds)))
        attacks.append(("SIGSTOP PostgreSQL", lambda: sigstop(data, "postgres", seconds,
                                                               whole_family=True)))
        canary = chaos.Canary(port, every=0.5)
        for name, attack in attacks:
            canary.start(name)
            attack()
            recovered = canary.recovered(in_a_row=3, timeout=60)
            figures = canary.stop()
            results.append({"attack": name, "canary_p50_ms": _ms(figures.percentile(50)),
                            "canary_p95_ms": _ms(figures.percentile(95)),
                            "failures": figures.failures, "runs": figures.count,
                            "recovered": recovered})
    print("\nThe canary (1+1 through the API every 0.5 s) during each attack. It is an API"
          "\ncaller itself: a flood of API calls takes the API's share, which is the"
          "\nquota doing its job (the worksheets keep theirs):")
    print(f"{'attack':<28} {'p50':>9} {'p95':>9} {'failed':>8}")
    for row in results:
        p50 = "-" if row["canary_p50_ms"] is None else f"{row['canary_p50_ms']:.0f} ms"
        p95 = "-" if row["canary_p95_ms"] is None else f"{row['canary_p95_ms']:.0f} ms"
        print(f"{row['attack']:<28} {p50:>9} {p95:>9} {row['failures']:>3}/{row['runs']:<4}"
              + ("" if row["recovered"] else "  (did not recover)"))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "chaos.json"
    path.write_text(json.dumps({"seconds_per_attack": seconds, "attacks": results},
                               indent=2) + "\n")
    print(f"wrote {path}")


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


if __name__ == "__main__":
    main()
