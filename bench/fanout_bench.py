"""Fan-out: 10,000 messages a second to 1,000 connected browsers, nothing lost.

What the figure means here (printed with the results):

- an appliance with two frontends and one worker (python engine);
- 1,000 websocket clients, half on web0 and half on web1, each with a
  browser cookie of its own. A page needs no session to be shown
  announcements: a frontend gives a bus message to every websocket it holds
  that the message is meant for (web/sessions.py ``deliver``), so the
  clients only connect, as a page does before it opens a worksheet;
- a sender that joins the frontends' bus as ``salvusctl message`` does
  (salvusctl/messaging.py: it binds the message endpoint every frontend
  subscribes to, with the frontends' CURVE key) and publishes bus messages
  at a paced rate. Unlike a frontend's ``web.bus.Bus`` it does not listen to
  the acks, so it takes as little of the host's CPU as it can:
  * broadcast: 10 messages a second to ``all`` for 10 s: 10,000 deliveries
    a second (each message reaches 1,000 browsers);
  * targeted: 10,000 messages a second, each to one browser (``browser:ID``,
    round robin) for 10 s: 10,000 deliveries a second, every message on the
    bus reaching one page;
- every client counts what arrived per phase: lost, doubled, out of order;
  the latency is from the send (a monotonic time in the text) to its arrival
  in the client.

Everything shares this host's cores: both frontends, the sender and the
client processes that play the browsers (``--clients``). The CPU each of
them used while sending, the host's busy share and the processes that used
the most CPU are printed, so a client or sender that could not keep up is
seen, not taken for the product. A prober asks each frontend's /health
every 0.2 s meanwhile: its slowest answer says how long a frontend's event
loop was held up.

    python bench/fanout_bench.py [--browsers N] [--clients P] [--seconds S]
                                 [--broadcast-rate R] [--targeted-rate R ...]

writes bench/results/fanout.json (a broadcast rate of 0 skips that phase;
several targeted rates are run in turn, lowest first).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing
import os
import resource
import shutil
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import processes_of, run, started_appliance  # noqa: E402

INTERPRETATION = (
    "{browsers} websocket clients (a browser cookie each; no session, none is needed to "
    "be shown announcements) spread over 2 frontends; a sender on the bus's message "
    "endpoint (as salvusctl message) sends paced messages "
    "for {seconds:g} s: broadcast = {broadcast_rate:g} msgs/s to all "
    "(= {broadcast_deliveries:,.0f} deliveries/s), targeted = {targeted_rate} msgs/s "
    "each to one browser (as many deliveries/s); every client checks "
    "lost / doubled / in order; latency = send to arrival in the client")
DRAIN = 30.0  # seconds at most that arrivals may trail the last send
QUIET = 3.0  # seconds without a new arrival after which a phase's tail is over
PROBE_EVERY = 0.2  # seconds between two /health requests to each frontend
PAUSE = 3.0  # seconds between two phases
TICK = 0.002  # seconds between two batches of a paced sender


# ------------------------------------------------------------------ helpers


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def raise_open_files() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def browser_id(index: int) -> str:
    return f"fanout-{index:05d}"


def health(port: int, timeout: float = 10) -> dict:
    """A frontend's /health, also when it says 503 (its database answered slowly:
    the counts it gives are still its own)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health",
                                    timeout=timeout) as reply:
            return json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return json.loads(err.read())


def supervisord_pid(data: Path) -> int:
    """The appliance's supervisord: every program of the data folder is its child."""
    for pid, command in processes_of(data).items():
        if "supervisord" in command:
            return pid
    raise AssertionError(f"no supervisord runs for {data}")


def pids_of(data: Path, names: list[str]) -> dict[str, int]:
    rows = json.loads(run(data, "status", "--json", check=False).stdout)
    return {r["name"]: r["pid"] for r in rows if r["name"] in names and r["state"] == "RUNNING"}


def host_ticks() -> tuple[int, int]:
    """(busy, all) clock ticks of every core since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        ticks = [int(t) for t in f.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return sum(ticks) - idle, sum(ticks)


def process_cpu() -> dict[int, tuple[str, int, float]]:
    """Every process: (name, parent, user + system CPU seconds of all its threads)."""
    found = {}
    tick = os.sysconf("SC_CLK_TCK")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                text = f.read()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        found[int(pid)] = (name, int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    return found


def descendants(table: dict[int, tuple[str, int, float]], roots: list[int]) -> set[int]:
    found = set(roots)
    grew = True
    while grew:
        before = len(found)
        found |= {pid for pid, (_, parent, _) in table.items() if parent in found}
        grew = len(found) > before
    return found


def cpu_used(before: dict, after: dict, names: dict[int, str], roots: list[int]
             ) -> tuple[list[tuple[str, float]], float]:
    """CPU seconds each process used between two ``process_cpu``, most first;
    and what processes outside ``roots``' trees (another job on the host) used."""
    used = sorted(((pid, seconds - before.get(pid, (name, 0, 0.0))[2])
                   for pid, (name, _, seconds) in after.items()), key=lambda u: -u[1])
    ours = descendants(after, roots)
    others = sum(seconds for pid, seconds in used if pid not in ours)
    return [(names.get(pid) or command_of(pid), seconds) for pid, seconds in used], others


def command_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            words = f.read().decode(errors="replace").split("\0")
    except OSError:
        return f"[{pid}]"
    text = " ".join(" ".join(Path(w).name if "/" in w else w for w in words[:3]).split())
    return f"{text[:48]}[{pid}]"


# ------------------------------------------------------------------ the browsers


def client_main(conn, ports: list[int], indexes: list[int]) -> None:
    """One client process: a websocket per browser, until told to report."""
    raise_open_files()
    asyncio.run(_client(conn, ports, indexes))


async def _client(conn, ports: list[int], indexes: list[int]) -> None:
    from websockets.asyncio.client import connect

    # phase -> browser index -> (number, latency) of each arrival, in arrival order
    got: dict[str, dict[int, list[tuple[int, float]]]] = {}
    closed: list[tuple[int, str]] = []
    sockets = []
    gate = asyncio.Semaphore(50)  # connections being opened at once

    async def browse(index: int) -> None:
        async with gate:
            ws = await connect(f"ws://127.0.0.1:{ports[index % len(ports)]}/ws",
                               additional_headers={"Cookie": f"salvus_browser={browser_id(index)}"},
                               compression=None, max_queue=None, open_timeout=60,
                               ping_interval=None)
        sockets.append(ws)
        try:
            async for frame in ws:
                now = time.monotonic()
                message = json.loads(frame)
                if message.get("type") == "announcement":
                    phase, number, sent = message["text"].split()
                    got.setdefault(phase, {}).setdefault(index, []).append(
                        (int(number), now - float(sent)))
        except Exception as exc:  # the connection ended under us: say so
            closed.append((index, repr(exc)))
            return
        closed.append((index, f"closed: {ws.close_code} {ws.close_reason}"))

    loop = asyncio.get_running_loop()
    started = time.monotonic()
    tasks = [asyncio.create_task(browse(i)) for i in indexes]
    while len(sockets) + len(closed) < len(indexes):
        await asyncio.sleep(0.05)
    conn.send(("connected", len(sockets), time.monotonic() - started, list(closed)))
    commands: asyncio.Queue = asyncio.Queue()
    loop.add_reader(conn.fileno(), lambda: commands.put_nowait(conn.recv()))
    while True:
        command = await commands.get()
        if command[0] == "count":  # (phase,) -> browsers that have any, arrivals, closed
            phase = got.get(command[1], {})
            conn.send((len(phase), sum(map(len, phase.values())), len(closed)))
        elif command[0] == "cpu":
            conn.send(time.process_time())
        elif command[0] == "report":
            conn.send({"got": got, "closed": closed})
            break
    loop.remove_reader(conn.fileno())
    for ws in sockets:
        await ws.close()
    for task in tasks:
        task.cancel()


class Clients:
    """The client processes, and asking all of them at once."""

    def __init__(self, processes: int, ports: list[int], browsers: int):
        context = multiprocessing.get_context("spawn")
        self.conns, self.procs = [], []
        for p in range(processes):
            mine, theirs = context.Pipe()
            proc = context.Process(target=client_main, daemon=True,
                                   args=(theirs, ports, list(range(p, browsers, processes))))
            proc.start()
            self.conns.append(mine)
            self.procs.append(proc)

    def ask(self, *command, timeout: float = 120.0) -> list:
        for conn in self.conns:
            conn.send(command)
        return [answer(conn, timeout) for conn in self.conns]

    def stop(self) -> None:
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)


def answer(conn, timeout: float):
    """The next thing a child process says."""
    if not conn.poll(timeout):
        raise TimeoutError("a child process did not answer")
    return conn.recv()


def prober_main(conn, ports: list[int]) -> None:
    """Ask every frontend's /health every PROBE_EVERY s until told to stop:
    (when, port, seconds it took, or None when it failed)."""
    probes = []
    while not conn.poll():
        for port in ports:
            start = time.monotonic()
            try:
                health(port, timeout=30)
                probes.append((start, port, time.monotonic() - start))
            except OSError:
                probes.append((start, port, None))
        time.sleep(PROBE_EVERY)
    conn.send(probes)


# ------------------------------------------------------------------ the sender


class Sender:
    """``salvusctl message`` at a rate (salvusctl/messaging.py joins the bus
    this way): binds the message endpoint of the frontends file, to which
    every frontend subscribes, as a CURVE server with the frontends' key, and
    publishes bus messages (web/bus.py's wire format, numbered, so a frontend
    counts what it missed). It hears no acks: the sender costs the host as
    little as it can."""

    def __init__(self, data: Path):
        import secrets

        import zmq

        from sage_worker import curve
        from web import bus

        self.bus, self.zmq, self.curve = bus, zmq, curve
        directory = bus.Directory.read(data / "etc" / "frontends.json")
        self.pair = curve.load_pair(data / "secrets" / "curve" / "web.key_secret")
        self.context = zmq.Context()
        self.zap = self.context.socket(zmq.REP)
        self.zap.linger = 0
        self.zap.bind(curve.ZAP_ENDPOINT)
        self.pub = self.context.socket(zmq.XPUB)
        self.pub.linger = 0
        self.pub.sndhwm = bus.HWM  # as a frontend's publisher
        self.pub.setsockopt(zmq.XPUB_VERBOSE, 1)  # one event per subscriber
        curve.serve_as(self.pub, self.pair)
        self.pub.bind(directory.message_endpoint)
        self.name = f"fanout-bench:{secrets.token_hex(3)}"
        self.boot = secrets.token_hex(4)
        self.seq = 0
        self.subscribed = 0

    def serve(self, wait_ms: int = 0) -> None:
        """Answer ZAP (new subscribers) and count subscriptions."""
        zmq = self.zmq
        poller = zmq.Poller()
        poller.register(self.zap, zmq.POLLIN)
        poller.register(self.pub, zmq.POLLIN)
        for sock, _ in poller.poll(wait_ms):
            if sock is self.zap:
                self.curve.answer(self.zap, {self.pair.public})
            else:
                self.subscribed += self.pub.recv()[:1] == b"\x01"

    def wait_for_subscribers(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.subscribed < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.subscribed} of {count} frontends subscribed "
                                     "to the message endpoint")
            self.serve(100)

    def message(self, to: str, target: str | None, text: str) -> None:
        if self.zap.poll(0):
            self.serve()
        self.seq += 1
        body = self.bus.new_message(to, target, text, self.name)
        self.pub.send_multipart(self.bus.encode(b"msg", self.name, self.boot, self.seq, body))

    def close(self) -> None:
        self.pub.close(linger=0)
        self.zap.close(linger=0)
        self.context.term()


def warm_up(sender: Sender, clients: Clients, browsers: int) -> int:
    """Broadcast until every browser has one: both frontends hear us and hold
    every websocket. Returns how many warm-up messages it took."""
    for number in range(200):
        sender.message("all", None, f"warm {number} {time.monotonic()}")
        sender.serve(500)
        if sum(c[0] for c in clients.ask("count", "warm")) == browsers:
            return number + 1
    raise AssertionError("the browsers never all got a warm-up broadcast")


def paced(rate: float, count: int, send) -> float:
    """``send(i)`` for i < count at ``rate`` a second; the seconds it took."""
    start = time.monotonic()
    batch = max(int(rate * TICK), 1)  # fast rates: a sleep per message costs more than it
    sent = 0
    while sent < count:
        due = min(count, int((time.monotonic() - start) * rate) + 1)
        while sent < due:
            send(sent)
            sent += 1
        time.sleep(max(start + (sent + batch - 1) / rate - time.monotonic(), 0))
    return time.monotonic() - start


def drain(clients: Clients, phase: str, expected: int) -> float:
    """Wait until every delivery arrived, or arrivals stopped; seconds waited."""
    start = last_change = time.monotonic()
    seen = -1
    while time.monotonic() - start < DRAIN:
        arrived = sum(c[1] for c in clients.ask("count", phase))
        if arrived >= expected:
            break
        if arrived != seen:
            seen, last_change = arrived, time.monotonic()
        elif time.monotonic() - last_change > QUIET:
            break
        time.sleep(0.2)
    return time.monotonic() - start


def run_phase(tag: str, clients: Clients, names: dict[int, str], roots: list[int],
              rate: float, count: int, deliveries: int, send) -> dict:
    """Send ``count`` messages at ``rate`` (``deliveries`` expected in all) and
    wait for them; the CPU everyone used while sending."""
    processes = process_cpu()
    clients_cpu = clients.ask("cpu")
    sender = time.process_time()
    busy, ticks = host_ticks()
    started = time.monotonic()
    sending = paced(rate, count, send)
    busy_after, ticks_after = host_ticks()
    sender = time.process_time() - sender
    clients_cpu = [b - a for a, b in zip(clients_cpu, clients.ask("cpu"), strict=True)]
    used, others = cpu_used(processes, process_cpu(), names, roots)
    waited = drain(clients, tag, deliveries)
    by_name = dict(used)
    return {"send_s": sending, "sent": count, "send_rate": count / sending,
            "drain_s": waited, "window": (started, time.monotonic()),
            "cpu_s": {"web0": by_name.get("web0"), "web1": by_name.get("web1"),
                      "sender": sender, "clients": clients_cpu},
            "host_busy": (busy_after - busy) / max(ticks_after - ticks, 1),
            "others_cpu_s": others, "top_cpu_s": used[:8]}


# ------------------------------------------------------------------ judging


def judge(expected: dict[int, list[int]], got: dict[int, list[tuple[int, float]]]) -> dict:
    """Per browser: lost, doubled, out of order (over what arrived)."""
    lost = doubled = disordered = short = 0
    for index, numbers in expected.items():
        arrived = [number for number, _ in got.get(index, [])]
        distinct = set(arrived)
        missing = len(set(numbers) - distinct)
        lost += missing
        short += missing > 0
        doubled += len(arrived) - len(distinct)
        disordered += sum(1 for a, b in itertools.pairwise(arrived) if b <= a)
    return {"expected": sum(map(len, expected.values())),
            "arrived": sum(map(len, got.values())), "lost": lost, "doubled": doubled,
            "out_of_order": disordered, "browsers_missing_some": short}


def latency_ms(values: list[float]) -> dict:
    return {"p50": percentile(values, 0.5) * 1000, "p99": percentile(values, 0.99) * 1000,
            "max": max(values, default=float("nan")) * 1000}


def summarize(tag: str, phase: dict, expected: dict[int, list[int]], reports: list[dict],
              probes: list[tuple[float, int, float | None]], ports: list[int]) -> dict:
    got: dict[int, list[tuple[int, float]]] = {}
    for report in reports:
        got.update(report["got"].get(tag, {}))
    verdict = judge(expected, got)
    every = [latency for arrivals in got.values() for _, latency in arrivals]
    per_frontend = {f"web{f}": latency_ms([lat for index, arrivals in got.items()
                                          if index % len(ports) == f for _, lat in arrivals])
                    for f in range(len(ports))}
    # A broadcast's first and last arrival: the bus's share, and the fan-out's.
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    for arrivals in got.values() if tag == "b" else ():
        for number, latency in arrivals:
            first[number] = min(first.get(number, latency), latency)
            last[number] = max(last.get(number, latency), latency)
    start, end = phase.pop("window")
    slow = {}
    for i, port in enumerate(ports):
        taken = [t for when, p, t in probes if p == port and start <= when <= end]
        answered = [t for t in taken if t is not None]
        slow[f"web{i}"] = {"probes": len(taken), "failed": len(taken) - len(answered),
                           "max_ms": max(answered, default=float("nan")) * 1000}
    span = phase["send_s"] + phase["drain_s"]
    return {**verdict, **phase,
            "deliveries_per_s": verdict["arrived"] / phase["send_s"],
            "deliveries_per_s_incl_tail": verdict["arrived"] / span,
            "latency_ms": latency_ms(every), "latency_ms_by_frontend": per_frontend,
            **({"first_arrival_ms": latency_ms(list(first.values())),
                "last_arrival_ms": latency_ms(list(last.values()))} if first else {}),
            "health_answer": slow}


# ------------------------------------------------------------------ main


def phases(args, sender: Sender) -> list[tuple]:
    """(name, tag in the text, rate, messages, expected per browser, send) per phase."""
    everyone = range(args.browsers)
    found = []
    if args.broadcast_rate:
        count = int(args.broadcast_rate * args.seconds)
        found.append(("broadcast", "b", args.broadcast_rate, count,
                      {i: list(range(count)) for i in everyone},
                      lambda i: sender.message("all", None, f"b {i} {time.monotonic()}")))
    for number, rate in enumerate(sorted(args.targeted_rate)):
        count, tag = int(rate * args.seconds), f"t{number}"
        found.append((f"targeted {rate:,.0f}/s", tag, rate, count,
                      {i: list(range(len(range(i, count, args.browsers)))) for i in everyone},
                      lambda i, tag=tag: sender.message(
                          "browser", browser_id(i % args.browsers),
                          f"{tag} {i // args.browsers} {time.monotonic()}")))
    return found


def bus_lost(ports: list[int]) -> dict[str, int | None]:
    """Bus messages each frontend counted as lost (None: it did not answer in a
    minute, its event loop held up by a backlog)."""
    found = {}
    for i, port in enumerate(ports):
        try:
            found[f"web{i}"] = health(port, timeout=60)["bus"]["lost"]
        except OSError:
            found[f"web{i}"] = None
    return found


def measure(args, data: Path, base: int) -> dict:
    ports = [base, base + 1]
    names = {pid: name for name, pid in pids_of(data, ["web0", "web1", "worker0"]).items()}
    names[os.getpid()] = "sender"
    roots = [os.getpid(), supervisord_pid(data)]
    # Bound first: its port (the bus port) cannot become a client's ephemeral port.
    sender = Sender(data)
    clients = prober = None
    results: dict = {"browsers": args.browsers, "client_processes": args.clients}
    try:
        sender.wait_for_subscribers(len(ports))
        clients = Clients(args.clients, ports, args.browsers)
        names.update({p.pid: f"client{i}" for i, p in enumerate(clients.procs)})
        connected = [answer(c, 300) for c in clients.conns]
        failed = [f for c in connected for f in c[3]]
        if failed:
            raise AssertionError(f"{len(failed)} websockets failed to connect: {failed[:3]}")
        results["connect_s"] = max(c[2] for c in connected)
        print(f"{sum(c[1] for c in connected)} browsers connected in "
              f"{results['connect_s']:.1f} s ({args.clients} client processes)")
        results["browsers_per_frontend"] = {f"web{i}": health(port)["browsers"]
                                            for i, port in enumerate(ports)}
        results["warm_up_messages"] = warm_up(sender, clients, args.browsers)
        context = multiprocessing.get_context("spawn")
        probe_conn, theirs = context.Pipe()
        prober = context.Process(target=prober_main, args=(theirs, ports), daemon=True)
        prober.start()
        names[prober.pid] = "prober"
        time.sleep(2)  # its start-up is not counted in the first phase
        before = bus_lost(ports)
        measured = []
        for name, tag, rate, count, expected, send in phases(args, sender):
            outcome = run_phase(tag, clients, names, roots, rate, count,
                                sum(map(len, expected.values())), send)
            measured.append((name, tag, outcome, expected))
            time.sleep(PAUSE)
        after = bus_lost(ports)
        probe_conn.send("stop")
        probes = answer(probe_conn, 60)
        reports = clients.ask("report", timeout=300)
    finally:
        sender.close()
        if clients is not None:
            clients.stop()
        if prober is not None:
            prober.join(10)
            if prober.is_alive():
                prober.terminate()
    results["phases"] = [{"phase": name, **summarize(tag, outcome, expected, reports, probes,
                                                     ports)}
                         for name, tag, outcome, expected in measured]
    results["bus_lost_by_frontends"] = {
        n: None if after[n] is None or before[n] is None else after[n] - before[n]
        for n in after}
    results["connections_closed"] = [c for r in reports for c in r["closed"]]
    return results


def show(results: dict) -> None:
    print(f"\nfigure: {results['interpretation']}")
    for r in results["phases"]:
        cpu, span = r["cpu_s"], r["send_s"]
        print(f"\n{r['phase']}: sent {r['sent']:,} msgs in {r['send_s']:.2f} s "
              f"({r['send_rate']:,.0f}/s); deliveries expected {r['expected']:,}, arrived "
              f"{r['arrived']:,}")
        print(f"  {r['deliveries_per_s']:,.0f} deliveries/s over the sending time "
              f"({r['deliveries_per_s_incl_tail']:,.0f}/s counting a {r['drain_s']:.1f} s tail)")
        print(f"  lost {r['lost']:,}  doubled {r['doubled']:,}  out of order "
              f"{r['out_of_order']:,}  browsers missing some {r['browsers_missing_some']:,}")
        for label, key in (("latency", "latency_ms"), ("1st arrival", "first_arrival_ms"),
                           ("last arrival", "last_arrival_ms")):
            if key not in r:
                continue
            print(f"  {label:<13} p50 {r[key]['p50']:8.1f} ms  p99 {r[key]['p99']:8.1f} "
                  f"ms  max {r[key]['max']:8.1f} ms")
        print("  /health answered within: " + ", ".join(
            f"{n} max {h['max_ms']:.0f} ms ({h['failed']}/{h['probes']} failed)"
            for n, h in r["health_answer"].items()))
        print("  CPU while sending (share of one core): " + ", ".join(
            [f"{n} {(cpu[n] or 0) / span:.0%}" for n in ("web0", "web1", "sender")]
            + [f"client{i} {c / span:.0%}" for i, c in enumerate(cpu["clients"])])
            + f"; host busy {r['host_busy']:.0%} of {os.cpu_count()} cores, of which "
            f"processes not of this bench {r['others_cpu_s'] / span:.0%} of a core")
        print("  most CPU: " + ", ".join(f"{n} {s:.1f}s" for n, s in r["top_cpu_s"]))
    print(f"\nbus messages the frontends counted as lost: {results['bus_lost_by_frontends']}")
    print(f"websockets closed during the run: {len(results['connections_closed'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--browsers", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=4, help="client processes")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--broadcast-rate", type=float, default=10.0,
                        help="broadcasts a second (each to every browser)")
    parser.add_argument("--targeted-rate", type=float, nargs="*", default=[10000.0],
                        help="messages a second, each to one browser: one phase per rate, "
                             "lowest first (none: no targeted phase)")
    parser.add_argument("--keep-logs", type=Path, help="copy the appliance's logs here")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fanout.json")
    args = parser.parse_args()
    raise_open_files()
    # No quota is in the way: the browsers open no sessions (none is needed to
    # be shown announcements), so sessions_per_ip and _per_browser stay as they are.
    config = {("worker", "engine"): "python"}
    with started_appliance("salvus-fanout-", "--web", "2", "--workers", "1",
                           config=config) as (data, base, _):
        try:
            results = measure(args, data, base)
        finally:
            if args.keep_logs:
                shutil.copytree(data / "logs", args.keep_logs, dirs_exist_ok=True)
    results["interpretation"] = INTERPRETATION.format(
        browsers=args.browsers, seconds=args.seconds, broadcast_rate=args.broadcast_rate,
        broadcast_deliveries=args.broadcast_rate * args.browsers,
        targeted_rate=" and ".join(f"{r:,.0f}" for r in sorted(args.targeted_rate)))
    show(results)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
