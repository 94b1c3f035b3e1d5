"""Run one worker: ``python -m sage_worker --endpoint tcp://127.0.0.1:N [--engine E]``."""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

from sage_worker.engines import ENGINES, default_engine
from sage_worker.isolation import cgroup_v2_controllers, unreadable_for_sessions
from sage_worker.limits import Limits
from sage_worker.server import Settings, Worker, log


def uid_range(text: str) -> range:
    try:
        first, last = (int(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError("give the uid range as FIRST:LAST") from None
    if not 1000 <= first <= last:
        raise argparse.ArgumentTypeError("the uid range must be within 1000..2^31, FIRST<=LAST")
    return range(first, last + 1)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sage_worker", description=__doc__)
    parser.add_argument("--endpoint", required=True, help="ZeroMQ endpoint to bind")
    parser.add_argument("--engine", choices=sorted(ENGINES), default=None,
                        help="default: sage where passagemath is installed, else python")
    parser.add_argument("--name", default="worker")
    parser.add_argument("--sessions-dir", type=Path, default=None,
                        help="parent of the sessions' private working folders")
    parser.add_argument("--uid-range", type=uid_range, default=range(200000, 200256),
                        help="uids for sessions when running as root (FIRST:LAST)")
    parser.add_argument("--network", choices=("private", "shared"), default="private",
                        help="as root: give each session a private network namespace")
    parser.add_argument("--spares", type=int, default=2, metavar="N",
                        help="session children kept forked and ready (0: fork on demand)")
    Limits.add_arguments(parser)
    return parser.parse_args(argv)


# What the worker keeps of its environment; SALVUS_INSTANCE marks processes of
# one appliance (salvusctl finds leftovers by it) and is no secret.
KEPT_ENVIRONMENT = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "SALVUS_INSTANCE")


def restart_with_clean_environment(argv: list[str]) -> None:
    """Sessions are forked from this process, and an environment lives on in
    the process's memory even after os.environ is cleared: so start over with
    only what the worker needs (no DSN, keys or tokens from supervisord or the
    admin's shell)."""
    kept = {k: v for k, v in os.environ.items() if k in KEPT_ENVIRONMENT}
    if kept != dict(os.environ):
        os.execve(sys.executable, [sys.executable, "-m", "sage_worker", *argv], kept)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    restart_with_clean_environment(argv)
    try:
        limits = Limits.from_arguments(args)
    except ValueError as exc:
        sys.exit(f"Error: {exc}")
    engine = ENGINES[args.engine or default_engine()]()
    root = os.geteuid() == 0
    unreadable = unreadable_for_sessions() if root else []
    if unreadable:
        log(f"{args.name}: WARNING: session uids cannot read {', '.join(unreadable)}; "
            "sessions run as root's uid instead (reduced isolation). Install Salvus and "
            "its Python where other users can read them to get per-session uids.")
    per_session_uids = root and not unreadable
    sessions_dir = args.sessions_dir or Path(tempfile.gettempdir()) / f"salvus-{args.name}"
    settings = Settings(args.endpoint, args.name, limits, sessions_dir,
                        args.uid_range if per_session_uids else None,
                        per_session_uids and args.network == "private", max(args.spares, 0))
    preload = engine.preload()
    start = time.perf_counter()
    engine.warm()
    warm = time.perf_counter() - start
    # Move every object made so far out of the collector's reach: a child's
    # garbage collection would otherwise touch (and so copy) all of the
    # parent's memory after fork.
    gc.collect()
    gc.freeze()
    worker = Worker(settings, engine)
    try:
        worker.bind()
    except Exception as exc:
        sys.exit(f"Error: cannot listen on {args.endpoint} ({exc}); pick a free port")
    worker.sweep_leftovers()
    if per_session_uids:
        uids = f"per-session uids {args.uid_range.start}-{args.uid_range.stop - 1}"
        network = "private network namespace" if settings.private_network else "shared network"
    else:
        uids = ("shared uid (isolation is reduced to rlimits and process groups: "
                + ("the install is not readable by other users)" if root else "not root)"))
        network = "shared network"
    offered = {"memory", "pids"} & cgroup_v2_controllers()
    cgroups = ("resource limits by rlimits; cgroup v2 " + (
        f"offers {'/'.join(sorted(offered))} here but is not used yet" if offered
        else "memory/pids are not offered by this host"))
    log(f"{args.name}: engine={engine.name} ({engine.versions()}) preload={preload:.2f}s "
        f"warm={warm:.2f}s endpoint={args.endpoint} pid={os.getpid()}; sessions: {uids}, "
        f"{network}, {cgroups}; limits: {limits.describe()}")
    worker.serve()
    log(f"{args.name}: stopped")


if __name__ == "__main__":
    main()
