"""Scale: 1,000 concurrent Sage sessions on this 2-core, 24 GB host, 100 active.

An appliance with the real Sage engine (the default), two frontends and four
workers of 260 sessions each ([worker] max_sessions; each worker gets a uid
per session and per spare from its range), the frontends' per-IP quota
raised to let 1,000 sessions come from this one address:

- open: 1,000 websocket clients (a browser cookie each) open a worksheet
  session and run ``1+1`` in it, a few at a time (``--opening``), as pages
  do: a frontend starts a session on the least loaded worker with the first
  execution. Timed from the first open to the last first result;
- memory per session: the host's used memory (MemTotal - MemAvailable)
  before and after, divided by the sessions; the PSS and USS of every
  process under the workers (/proc/PID/smaps_rollup: each session is an init
  and the session process; the spares are counted as sessions too); and
  what the sessions' memory cgroups are charged;
- load: 100 of the sessions, spread over the workers, run small cells
  (``1+1``, ``factor(2^64+1)``, a 1,000-step loop) for 30 s, while 900 stay
  idle and connected: back to back (think time 0) and then with half a
  second between a page's cells. Each cell is timed from the execute to its
  ``done``, and its result is checked.

Should the sessions not all open, the bench says what stopped them (the
notice the page got, the workers' logs, the host's available memory: opening
stops if it falls below ``--memory-floor-mb``, so as not to push this host
into the OOM killer) rather than report a smaller number as the figure.

    python bench/scale_bench.py [--sessions N] [--workers W] [--active A]
                                [--seconds S] [--think T ...]

writes bench/results/scale.json.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import multiprocessing
import os
import resource
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import percentile  # noqa: E402
from tests.helpers import processes_of, run, started_appliance  # noqa: E402

CELLS = (("1+1", "2"), ("factor(2^64+1)", "274177 * 67280421310721"),
         ("s = 0\nfor i in range(1000):\n    s += i\ns", "499500"))
FIRST_CELL = "1+1"
CELL_TIMEOUT = 120.0  # seconds a cell may take before the client gives up on it
SETTLE = 5.0  # seconds for the host to settle before memory is read
MB = 1 << 20
# What the kernel holds for processes besides their pages (/proc/meminfo).
KERNEL_FIELDS = ("PageTables", "KernelStack", "SUnreclaim", "Shmem")
PROBLEM_WORDS = ("error", "refused", "could not", "cannot", "failed", "at its limit", "no free",
                 "not answering", "out of memory", "oom")


# ------------------------------------------------------------------ the host


def meminfo() -> dict[str, int]:
    with open("/proc/meminfo") as f:
        return {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}


def host_used() -> int:
    info = meminfo()
    return info["MemTotal"] - info["MemAvailable"]


def raise_open_files() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def parents() -> dict[int, int]:
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                found[int(pid)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
    return found


def rollup(pid: int) -> dict[str, int]:
    """Rss, Pss and USS (private clean + dirty) of one process, in bytes."""
    values = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("Rss", "Pss", "Private_Clean", "Private_Dirty", "Swap"):
                values[name] = int(rest.split()[0]) * 1024
    return {"rss": values.get("Rss", 0), "pss": values.get("Pss", 0),
            "uss": values.get("Private_Clean", 0) + values.get("Private_Dirty", 0),
            "swap": values.get("Swap", 0)}


def session_memory(workers: dict[str, int]) -> dict:
    """Every process under each worker: the sessions' trees (init, session and
    whatever it started), summed; and the worker parents' own."""
    ppid = parents()
    children: dict[int, list[int]] = {}
    for pid, parent in ppid.items():
        children.setdefault(parent, []).append(pid)
    totals = {"rss": 0, "pss": 0, "uss": 0, "swap": 0}
    parent_totals = dict(totals)
    trees = processes = 0
    per_worker = {}
    for name, worker in workers.items():
        inits = children.get(worker, [])
        per_worker[name] = len(inits)
        trees += len(inits)
        stack = list(inits)
        while stack:
            pid = stack.pop()
            stack += children.get(pid, [])
            try:
                for key, value in rollup(pid).items():
                    totals[key] += value
                processes += 1
            except OSError:
                continue  # ended meanwhile
        for key, value in rollup(worker).items():
            parent_totals[key] += value
    return {"trees": trees, "processes": processes, "per_worker": per_worker,
            "sessions_bytes": totals, "workers_bytes": parent_totals}


def cgroup_memory(workers: dict[str, int]) -> dict[str, int]:
    """What the kernel charges the workers' session groups (cgroup v1 memory;
    hierarchical, so a worker's folder holds all its sessions)."""
    total = {"usage": 0, "rss": 0, "cache": 0, "shmem": 0}
    for name, pid in workers.items():
        folder = Path(f"/sys/fs/cgroup/memory/salvus/{name}.{pid}")
        if not folder.exists():
            continue
        total["usage"] += int((folder / "memory.usage_in_bytes").read_text())
        stat = dict(line.split() for line in (folder / "memory.stat").read_text().splitlines())
        for key in ("rss", "cache", "shmem"):
            total[key] += int(stat.get(f"total_{key}", 0))
    return total


def cpu_by_process() -> dict[int, tuple[int, float]]:
    """Every process: (parent, CPU seconds of all its threads)."""
    found = {}
    tick = os.sysconf("SC_CLK_TCK")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[int(pid)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    return found


def host_ticks() -> tuple[int, int]:
    """(busy, all) clock ticks of every core since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        ticks = [int(t) for t in f.readline().split()[1:]]
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


class CpuWatch:
    """The host's CPU over a phase: how busy, and how much of it went to
    processes that are neither the appliance's nor this bench's (another
    job on the host skews the latencies; this says by how much)."""

    def __init__(self, roots: list[int]):
        self.roots = roots
        self.before = cpu_by_process()
        self.ticks = host_ticks()

    def ours(self, table: dict[int, tuple[int, float]]) -> set[int]:
        mine = set(self.roots)
        grew = True
        while grew:
            grew = False
            for pid, (parent, _) in table.items():
                if parent in mine and pid not in mine:
                    mine.add(pid)
                    grew = True
        return mine

    def result(self) -> dict:
        after = cpu_by_process()
        busy, ticks = host_ticks()
        ours = self.ours(after)
        used = {pid: seconds - self.before.get(pid, (0, 0.0))[1]
                for pid, (_, seconds) in after.items()}
        return {"host_busy": (busy - self.ticks[0]) / max(ticks - self.ticks[1], 1),
                "ours_cpu_s": sum(v for p, v in used.items() if p in ours),
                "others_cpu_s": sum(v for p, v in used.items() if p not in ours)}


def frontend_rss(frontends: dict[str, int]) -> int:
    return sum(rollup(pid)["rss"] for pid in frontends.values())


def supervisord_pid(data: Path) -> int:
    """The appliance's supervisord: every program of the data folder is its child."""
    for pid, command in processes_of(data).items():
        if "supervisord" in command:
            return pid
    raise AssertionError(f"no supervisord runs for {data}")


def pids_of(data: Path) -> dict[str, int]:
    rows = json.loads(run(data, "status", "--json", check=False).stdout)
    return {r["name"]: r["pid"] for r in rows if r["state"] == "RUNNING"}


def memory_snapshot(workers: dict[str, int], frontends: dict[str, int]) -> dict:
    info = meminfo()
    return {"host_used": info["MemTotal"] - info["MemAvailable"],
            "available": info["MemAvailable"],
            "kernel": {k: info.get(k, 0) for k in KERNEL_FIELDS},
            "frontends_rss": frontend_rss(frontends), "cgroups": cgroup_memory(workers),
            **session_memory(workers)}


# ------------------------------------------------------------------ the pages


def client_main(conn, ports: list[int], indexes: list[int], opening: int) -> None:
    raise_open_files()
    asyncio.run(_client(conn, ports, indexes, opening))


class Page:
    """One browser's websocket and worksheet session."""

    def __init__(self, index: int, ws):
        self.index = index
        self.ws = ws
        self.cells = 0

    async def run(self, code: str) -> tuple[float, str, str, list[str]]:
        """(seconds, status, text result, notices) of one cell."""
        self.cells += 1
        cell = f"c{self.cells}"
        start = time.monotonic()
        await self.ws.send(json.dumps({"type": "execute", "cell": cell, "code": code}))
        result, notices = "", []
        while True:
            message = json.loads(await asyncio.wait_for(self.ws.recv(), CELL_TIMEOUT))
            if message.get("cell") != cell:
                continue
            kind = message["type"]
            if kind == "result":
                result = message["data"].get("text/plain", "")
            elif kind in ("notice", "error"):
                notices.append(message.get("text") or f"{message.get('ename')}: "
                               f"{message.get('evalue')}")
            elif kind == "done":
                return time.monotonic() - start, message["status"], result, notices


async def _client(conn, ports: list[int], indexes: list[int], opening: int) -> None:
    from websockets.asyncio.client import connect

    pages: dict[int, Page] = {}
    opened: list[dict] = []  # per page: its times, or why it failed
    gate = asyncio.Semaphore(opening)
    halt = asyncio.Event()

    async def open_one(index: int) -> None:
        async with gate:
            if halt.is_set():
                opened.append({"index": index, "skipped": True})
                return
            start = time.monotonic()
            try:
                ws = await connect(f"ws://127.0.0.1:{ports[index % len(ports)]}/ws",
                                   additional_headers={
                                       "Cookie": f"salvus_browser=scale-{index:05d}"},
                                   compression=None, max_queue=None, max_size=None,
                                   open_timeout=120, ping_interval=None)
                await ws.send(json.dumps({"type": "open"}))
                while True:
                    message = json.loads(await asyncio.wait_for(ws.recv(), 60))
                    if message["type"] in ("attached", "protocol_error"):
                        break
                if message["type"] != "attached":
                    raise RuntimeError(f"open refused: {message}")
                page = Page(index, ws)
                attached = time.monotonic()
                seconds, status, result, notices = await page.run(FIRST_CELL)
            except Exception as exc:
                opened.append({"index": index, "error": repr(exc)[:300], "at": time.monotonic()})
                return
            entry = {"index": index, "start": start, "attached": attached - start,
                     "first_cell": seconds, "done": time.monotonic(), "status": status}
            if status != "ok" or result != "2":
                entry["error"] = f"first cell: {status} {result!r} {notices}"[:300]
            else:
                pages[index] = page
            opened.append(entry)

    loop = asyncio.get_running_loop()
    commands: asyncio.Queue = asyncio.Queue()
    loop.add_reader(conn.fileno(), lambda: commands.put_nowait(conn.recv()))
    tasks = []
    while True:
        command = await commands.get()
        if command[0] == "open":
            tasks = [asyncio.create_task(open_one(i)) for i in indexes]
        elif command[0] == "progress":
            conn.send((len(pages), len(opened)))
        elif command[0] == "halt":  # open no more: the host is short of memory
            halt.set()
            conn.send(True)
        elif command[0] == "opened":
            await asyncio.gather(*tasks)
            conn.send(opened)
        elif command[0] == "load":
            _, active, seconds, think = command
            conn.send(await load([pages[i] for i in active if i in pages], seconds, think))
        elif command[0] == "close":
            break
    loop.remove_reader(conn.fileno())
    await asyncio.gather(*(page.ws.close() for page in pages.values()),
                         return_exceptions=True)
    conn.send("closed")


async def load(pages: list[Page], seconds: float, think: float) -> list[tuple]:
    """Each page runs the small cells in turn until ``seconds`` are up:
    (code index, seconds, status, right result) per cell."""
    end = time.monotonic() + seconds
    done: list[tuple] = []

    async def busy(page: Page, offset: int) -> None:
        for turn in itertools.count(offset):
            if time.monotonic() >= end:
                return
            which = turn % len(CELLS)
            code, expected = CELLS[which]
            try:
                taken, status, result, _ = await page.run(code)
            except Exception as exc:  # a lost connection or a cell that never ended
                done.append((which, CELL_TIMEOUT, repr(exc)[:100], False))
                return
            done.append((which, taken, status, result == expected))
            if think:
                await asyncio.sleep(think)

    await asyncio.gather(*(busy(page, i) for i, page in enumerate(pages)))
    return done


class Clients:
    def __init__(self, processes: int, ports: list[int], sessions: int, opening: int):
        context = multiprocessing.get_context("spawn")
        self.conns, self.procs = [], []
        per_process = max(opening // processes, 1)
        for p in range(processes):
            mine, theirs = context.Pipe()
            proc = context.Process(target=client_main, daemon=True, args=(
                theirs, ports, list(range(p, sessions, processes)), per_process))
            proc.start()
            self.conns.append(mine)
            self.procs.append(proc)

    def tell(self, *command) -> None:
        for conn in self.conns:
            conn.send(command)

    def answers(self, timeout: float = 600) -> list:
        found = []
        for conn in self.conns:
            if not conn.poll(timeout):
                raise TimeoutError("a client process did not answer")
            found.append(conn.recv())
        return found

    def ask(self, *command, timeout: float = 600) -> list:
        self.tell(*command)
        return self.answers(timeout)

    def stop(self) -> None:
        for conn in self.conns:
            try:
                conn.send(("close",))
            except OSError:
                continue
        for proc in self.procs:
            proc.join(60)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)


# ------------------------------------------------------------------ the phases


def open_sessions(clients: Clients, sessions: int, floor: int) -> dict:
    """Open every session (and its first cell); halt when the host's available
    memory falls below ``floor``. Returns what happened."""
    start = time.monotonic()
    clients.tell("open")
    halted_at = None
    lowest = meminfo()["MemAvailable"]
    while True:
        time.sleep(0.5)
        lowest = min(lowest, meminfo()["MemAvailable"])
        ready, finished = (sum(x) for x in zip(*clients.ask("progress"), strict=True))
        if finished >= sessions:
            break
        if halted_at is None and lowest < floor:
            clients.ask("halt")
            halted_at = {"sessions": ready, "available_mb": lowest // MB,
                         "after_s": time.monotonic() - start}
            print(f"halted opening at {ready} sessions: MemAvailable {lowest // MB} MB")
    tried = [e for found in clients.ask("opened") for e in found]
    entries = [e for e in tried if not e.get("skipped")]
    good = [e for e in entries if "error" not in e]
    first = min((e["start"] for e in good), default=start)
    last = max((e["done"] for e in good), default=start)
    errors: dict[str, int] = {}
    for entry in entries:
        if "error" in entry:
            errors[entry["error"]] = errors.get(entry["error"], 0) + 1
    return {"opened": len(good), "failed": len(entries) - len(good),
            "not_tried": sessions - len(entries), "wall_s": last - first,
            "per_session_ms": {
                "attach_p50": percentile([e["attached"] for e in good], 50) * 1000,
                "first_cell_p50": percentile([e["first_cell"] for e in good], 50) * 1000,
                "first_cell_p99": percentile([e["first_cell"] for e in good], 99) * 1000},
            "errors": dict(sorted(errors.items(), key=lambda e: -e[1])[:10]),
            "halted": halted_at, "lowest_available_mb": lowest // MB}


def load_phase(clients: Clients, active: list[int], seconds: float, think: float,
               roots: list[int]) -> dict:
    watch = CpuWatch(roots)
    start = time.monotonic()
    cells = [c for found in clients.ask("load", active, seconds, think,
                                         timeout=seconds + 2 * CELL_TIMEOUT) for c in found]
    wall = time.monotonic() - start
    cpu = watch.result()
    ok = [c for c in cells if c[2] == "ok" and c[3]]
    times = [c[1] for c in ok]
    return {"think_s": think, "pages": len(active), "cells": len(cells), "ok": len(ok),
            "wall_s": wall, **cpu,
            "wrong_or_failed": len(cells) - len(ok),
            "failures": sorted({f"{CELLS[c[0]][0]!r}: {c[2]}" for c in cells
                                if c not in ok})[:10],
            "cells_per_s": len(cells) / wall,
            "latency_ms": {"p50": percentile(times, 50) * 1000,
                           "p99": percentile(times, 99) * 1000,
                           "max": max(times, default=float("nan")) * 1000},
            "p50_ms_by_cell": {CELLS[i][0].split("\n")[0]: percentile(
                [c[1] for c in ok if c[0] == i], 50) * 1000 for i in range(len(CELLS))}}


def per_session(before: dict, after: dict, sessions: int) -> dict:
    """The memory one session costs, in MB, by each measure."""
    trees = after["trees"] or 1
    return {
        "host_used_delta": (after["host_used"] - before["host_used"]) / sessions / MB,
        "pss": after["sessions_bytes"]["pss"] / trees / MB,
        "uss": after["sessions_bytes"]["uss"] / trees / MB,
        "rss": after["sessions_bytes"]["rss"] / trees / MB,
        "cgroup_charged": (after["cgroups"]["usage"] - before["cgroups"]["usage"])
        / sessions / MB,
        "frontends_rss_delta": (after["frontends_rss"] - before["frontends_rss"])
        / sessions / MB,
        **{f"kernel_{k}": (after["kernel"][k] - before["kernel"][k]) / sessions / MB
           for k in KERNEL_FIELDS}}


# ------------------------------------------------------------------ main


def measure(args, data: Path, base: int) -> dict:
    programs = pids_of(data)
    workers = {n: p for n, p in programs.items() if n.startswith("worker")}
    frontends = {n: p for n, p in programs.items() if n.startswith("web")}
    ports = [base + i for i in range(len(frontends))]
    time.sleep(SETTLE)
    before = memory_snapshot(workers, frontends)
    clients = Clients(args.clients, ports, args.sessions, args.opening)
    roots = [os.getpid(), supervisord_pid(data)]
    try:
        opened = open_sessions(clients, args.sessions, args.memory_floor_mb * MB)
        print(f"opened {opened['opened']} sessions in {opened['wall_s']:.1f} s "
              f"({opened['failed']} failed, {opened['not_tried']} not tried)")
        time.sleep(SETTLE)
        after_open = memory_snapshot(workers, frontends)
        count = opened["opened"]
        loads = []
        if count:
            step = max(args.sessions // args.active, 1)
            active = list(range(0, args.sessions, step))[:args.active]
            for think in args.think:
                loads.append(load_phase(clients, active, args.seconds, think, roots))
                print(f"load (think {think:g} s): {loads[-1]['cells']} cells, p50 "
                      f"{loads[-1]['latency_ms']['p50']:.1f} ms, p99 "
                      f"{loads[-1]['latency_ms']['p99']:.1f} ms")
        after_load = memory_snapshot(workers, frontends)
    finally:
        clients.stop()
    return {"sessions_asked": args.sessions, "workers": len(workers),
            "frontends": len(frontends), "open": opened,
            "memory_before": before, "memory_after_open": after_open,
            "memory_after_load": after_load,
            "memory_per_session_mb": per_session(before, after_open, max(count, 1)),
            "memory_per_session_after_load_mb": per_session(before, after_load, max(count, 1)),
            "load": loads}


def diagnose(data: Path) -> list[str]:
    """The appliance's own words on what went wrong: error lines of its logs."""
    found = []
    for log in sorted((data / "logs").glob("*.log")):
        lines = [line for line in log.read_text(errors="replace").splitlines()
                 if any(w in line.lower() for w in PROBLEM_WORDS)]
        found += [f"{log.name}: {line[:300]}" for line in lines[-5:]]
    return found


def show(results: dict) -> None:
    opened, mem = results["open"], results["memory_per_session_mb"]
    print(f"\n{opened['opened']} of {results['sessions_asked']} Sage sessions open on "
          f"{results['workers']} workers ({results['memory_after_open']['per_worker']}), "
          f"{results['frontends']} frontends")
    print(f"time to open them (and run 1+1 in each): {opened['wall_s']:.1f} s; per session "
          f"first result p50 {opened['per_session_ms']['first_cell_p50']:.0f} ms, p99 "
          f"{opened['per_session_ms']['first_cell_p99']:.0f} ms")
    if opened["failed"] or opened["not_tried"]:
        print(f"NOT OPENED: {opened['failed']} failed, {opened['not_tried']} not tried; "
              f"halted for the host's memory (MemAvailable under --memory-floor-mb): "
              f"{opened['halted']}; errors: {opened['errors']}")
    print(f"memory per session: host used {mem['host_used_delta']:.1f} MB, PSS "
          f"{mem['pss']:.1f} MB, USS {mem['uss']:.1f} MB (RSS {mem['rss']:.0f} MB), cgroup "
          f"charge {mem['cgroup_charged']:.1f} MB, frontends {mem['frontends_rss_delta']:.2f} MB")
    print("  of which the kernel's (page tables, kernel stacks, unreclaimable slab, tmpfs): "
          + ", ".join(f"{k} {mem['kernel_' + k]:.2f} MB" for k in KERNEL_FIELDS))
    after = results["memory_after_open"]
    print(f"  host used {results['memory_before']['host_used'] / MB:,.0f} -> "
          f"{after['host_used'] / MB:,.0f} MB; {after['processes']} processes under the "
          f"workers; lowest MemAvailable {opened['lowest_available_mb']:,} MB")
    for phase in results["load"]:
        print(f"{phase['pages']} active, think {phase['think_s']:g} s: {phase['cells']} cells "
              f"({phase['cells_per_s']:.0f}/s), p50 {phase['latency_ms']['p50']:.1f} ms, p99 "
              f"{phase['latency_ms']['p99']:.1f} ms, max {phase['latency_ms']['max']:.0f} ms; "
              f"wrong or failed {phase['wrong_or_failed']}; p50 by cell "
              + ", ".join(f"{k} {v:.1f}" for k, v in phase["p50_ms_by_cell"].items()))
        print(f"    host busy {phase['host_busy']:.0%} of {os.cpu_count()} cores; processes "
              f"not of this bench used {phase['others_cpu_s'] / phase['wall_s']:.0%} of a core")
    load_mem = results["memory_per_session_after_load_mb"]
    print(f"memory per session after the load: host used {load_mem['host_used_delta']:.1f} MB, "
          f"PSS {load_mem['pss']:.1f} MB, USS {load_mem['uss']:.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--frontends", type=int, default=2)
    parser.add_argument("--spares", type=int, default=2)
    parser.add_argument("--active", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--think", type=float, nargs="+", default=[0.0, 0.5],
                        help="seconds between a page's cells, one load phase each")
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--opening", type=int, default=16,
                        help="sessions being opened at once, in all")
    parser.add_argument("--memory-floor-mb", type=int, default=2048,
                        help="stop opening sessions when MemAvailable falls below this")
    parser.add_argument("--keep-logs", type=Path, help="copy the appliance's logs here")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scale.json")
    args = parser.parse_args()
    raise_open_files()
    per_worker = math.ceil(args.sessions / args.workers) + 10  # the frontends balance by load
    config = {("worker", "engine"): "sage",
              ("worker", "max_sessions"): str(per_worker),
              ("worker", "spares"): str(args.spares),
              # Every page comes from 127.0.0.1: one address holds all the sessions.
              ("web", "sessions_per_ip"): str(args.sessions + 100)}
    with started_appliance("salvus-scale-", "--web", str(args.frontends), "--workers",
                           str(args.workers), config=config) as (data, base, _):
        try:
            results = measure(args, data, base)
        finally:
            problems = diagnose(data)
            if args.keep_logs:
                shutil.copytree(data / "logs", args.keep_logs, dirs_exist_ok=True)
    results["config"] = {f"[{s}] {k}": v for (s, k), v in config.items()}
    results["log_problems"] = problems
    show(results)
    if problems:
        print("the appliance's logs say:\n  " + "\n  ".join(problems))
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
