"""Run one worker::

    python -m sage_worker --endpoint tcp://127.0.0.1:N --server-key K.key_secret --clients DIR

An error that stops the worker (isolation that cannot be applied, keys that
cannot be read, a port in use) is one line, ``Error: ...``, naming the fix,
and exit code 78.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

from sage_worker import curve, mounts
from sage_worker.engines import ENGINES, default_engine
from sage_worker.isolation import MODES, IsolationError, Sandbox
from sage_worker.limits import Limits
from sage_worker.server import Settings, Worker, log
from salvusctl import logline

EXIT_CONFIG = 78  # sysexits' EX_CONFIG: supervisord does not retry it forever


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
    parser.add_argument("--server-key", type=Path, required=True, metavar="FILE",
                        help="the worker's CURVE certificate with its secret key")
    parser.add_argument("--clients", type=Path, required=True, metavar="DIR",
                        help="folder of the public certificates (*.key) of allowed clients")
    parser.add_argument("--sessions-dir", type=Path, default=None,
                        help="where sessions' files are mounted (isolation full) or kept")
    parser.add_argument("--isolation", choices=MODES, default="full",
                        help="full (the default; needs root): each session its own uid and "
                             "namespaces; none: sessions run as the worker's user and share "
                             "its files, processes and network")
    parser.add_argument("--uid-range", type=uid_range, default=range(200000, 200256),
                        help="uids for sessions (isolation full): FIRST:LAST")
    parser.add_argument("--network", choices=("private", "shared"), default="private",
                        help="isolation full: each session in an empty network namespace")
    parser.add_argument("--publish", help="ZeroMQ endpoint to publish every session "
                        "message on (topic: the session), for the frontends that watch it")
    parser.add_argument("--log-mb", type=int, default=256, metavar="MB",
                        help="what all sessions' message logs may hold together")
    parser.add_argument("--linger", type=float, default=600.0, metavar="SECONDS",
                        help="how long a session no frontend watches lives on")
    parser.add_argument("--spares", type=int, default=2, metavar="N",
                        help="session children kept forked and ready (0: fork on demand)")
    Limits.add_arguments(parser)
    return parser.parse_args(argv)


# What the worker keeps of its environment; SALVUS_INSTANCE marks processes of
# one appliance (salvusctl finds leftovers by it) and is no secret. LC_CTYPE:
# with no locale set, Python itself puts LC_CTYPE=C.UTF-8 in the environment
# at start (locale coercion); dropping it would restart the worker forever.
KEPT_ENVIRONMENT = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "SALVUS_INSTANCE")


def clean_environment(environ: dict[str, str]) -> dict[str, str] | None:
    """The environment the worker should run with, or None if it has it."""
    kept = {k: v for k, v in environ.items() if k in KEPT_ENVIRONMENT}
    return None if kept == environ else kept


def restart_with_clean_environment(argv: list[str]) -> None:
    """Sessions are forked from this process, and an environment lives on in
    the process's memory even after os.environ is cleared: so start over with
    only what the worker needs (no DSN, keys or tokens from supervisord or the
    admin's shell)."""
    kept = clean_environment(dict(os.environ))
    if kept is not None:
        os.execve(sys.executable, [sys.executable, "-m", "sage_worker", *argv], kept)


def fail(message: str) -> None:
    log(f"Error: {message}")
    sys.exit(EXIT_CONFIG)


def make_settings(args: argparse.Namespace, limits: Limits) -> Settings:
    full = args.isolation == "full"
    if full and os.geteuid() != 0:
        fail(f"{args.name}: sessions cannot be isolated: the worker does not run as root; "
             "run salvusctl as root, or set [worker] isolation = none in salvus.conf to "
             "run sessions as this user, with its files, processes and network")
    sessions_dir = args.sessions_dir or Path(tempfile.gettempdir()) / f"salvus-{args.name}"
    box = Sandbox(args.isolation, limits, sessions_dir.absolute(),
                  private_network=args.network == "private",
                  install=tuple(mounts.install_paths()) if full else ())
    try:
        server_key = curve.load_pair(args.server_key)
        clients = frozenset(curve.load_allowed(args.clients))
    except ValueError as exc:
        fail(f"{args.name}: {exc}; run `salvusctl init --force` to re-create the keys")
    return Settings(args.endpoint, args.name, box, args.uid_range if full else None,
                    server_key, clients, max(args.spares, 0), args.publish,
                    max(args.log_mb, 1), max(args.linger, 1.0))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    restart_with_clean_environment(argv)
    # No secret of the worker's goes into the formatter: sessions are forked
    # from this process and must find none in their memory.
    logline.setup(args.name)
    try:
        limits = Limits.from_arguments(args)
    except ValueError as exc:
        fail(str(exc))
    settings = make_settings(args, limits)
    engine = ENGINES[args.engine or default_engine()]()
    worker = Worker(settings, engine)
    try:
        worker.open()
    except Exception as exc:
        fail(f"{args.name}: cannot listen on {args.endpoint} ({exc}); pick a free port")
    try:
        worker.prepare_sessions_dir()
        worker.use_cgroups()
        worker.keep_only_needed_capabilities()
        worker.preflight()
    except (IsolationError, OSError) as exc:
        fail(f"{args.name}: sessions cannot be isolated ({exc}); run the worker as root on a "
             "host that allows mount and pid namespaces, make the install readable by other "
             "users (chmod -R o+rX), or set [worker] isolation = none in salvus.conf to run "
             "sessions unconfined")
    # Each session's home: with isolation full every session sees its own at
    # the same path; without, sessions are one trusted user's and share one.
    preload = engine.preload(settings.sandbox.sessions_dir if settings.sandbox.full
                             else settings.sandbox.sessions_dir / "shared")
    start = time.perf_counter()
    engine.warm()
    warm = time.perf_counter() - start
    # Move every object made so far out of the collector's reach: a child's
    # garbage collection would otherwise touch (and so copy) all of the
    # parent's memory after fork.
    gc.collect()
    gc.freeze()
    isolation = worker.status()["isolation"]
    log(f"{args.name}: engine={engine.name} ({engine.versions()}) preload={preload:.2f}s "
        f"warm={warm:.2f}s endpoint={args.endpoint} (CURVE, {len(settings.clients)} allowed "
        f"client keys) pid={os.getpid()}; isolation {isolation['mode']}: uid "
        f"{isolation['uid']}, namespaces {'/'.join(isolation['namespaces']) or 'none'}, "
        f"network {isolation['network']}, disk quota {isolation['disk_quota']}, "
        f"accounting {isolation['accounting']}; "
        f"limits: {limits.describe()}")
    worker.serve()
    log(f"{args.name}: stopped")


if __name__ == "__main__":
    main()
