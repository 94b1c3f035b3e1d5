"""Run a program as the unprivileged service user, seeing what it needs::

    python -m salvusctl.runas --user salvus --show DATA --home DIR -- COMMAND...

supervisord starts web frontends and the registry listener through this, as
root. It makes a mount namespace of its own in which /root, /home and every
folder above the install or a shown folder that the user may not enter (root's
0700 home, where a checkout often lives) are covered by empty skeletons, with
the install and the shown folders put back (sage_worker.mounts). Then the
groups, gid and uid become the user's, NO_NEW_PRIVS is set, and COMMAND
replaces this process: nothing of root remains, and the program reads its
install without any permission on the host being changed.

A failure is one line, ``Error: ...``, and exit code 78.
"""

from __future__ import annotations

import argparse
import os
import pwd
import sys
from pathlib import Path

from sage_worker import mounts
from sage_worker.system import CLONE_NEWNS, System
from salvusctl.accounts import Account, can_enter

EXIT_CONFIG = 78


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="salvusctl.runas", description=__doc__)
    parser.add_argument("--user", required=True)
    parser.add_argument("--show", type=Path, action="append", default=[],
                        help="a folder the program needs besides the install")
    parser.add_argument("--home", type=Path, required=True, help="its HOME")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command:
        parser.error("give the command after --")
    return args


def run_as(system: System, account: Account, shown: list[Path], home: Path,
           command: list[str]) -> None:
    groups = account.groups()
    needed = {path: path for path in [*mounts.install_paths(), *shown]}
    view = mounts.plan(needed, overlays={}, enterable=lambda f: can_enter(f, account, groups))
    system.unshare(CLONE_NEWNS)
    system.mount(None, "/", None, mounts.MS_REC | mounts.MS_PRIVATE, None)
    mounts.apply(system, view)
    system.setgroups(sorted(groups))
    system.setgid(account.gid)
    system.setuid(account.uid)  # from root: every capability goes with it
    system.no_new_privileges()
    os.environ.update(HOME=str(home), USER=account.name, LOGNAME=account.name)
    os.execvp(command[0], command)


def main(argv: list[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        entry = pwd.getpwnam(args.user)
    except KeyError:
        print(f"Error: no user {args.user!r}; run `salvusctl init --force` as root to create "
              "it", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    account = Account(entry.pw_name, entry.pw_uid, entry.pw_gid)
    try:
        run_as(System(), account, [p.absolute() for p in args.show], args.home, args.command)
    except OSError as exc:
        print(f"Error: cannot start {args.command[0]} as {args.user} ({exc}); salvusctl must "
              "run as root on a host that allows mount namespaces", file=sys.stderr)
        sys.exit(EXIT_CONFIG)


if __name__ == "__main__":
    main()
