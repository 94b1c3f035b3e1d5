"""Who runs what: the unprivileged service user when salvusctl runs as root."""

from __future__ import annotations

import grp
import os
import pwd
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from salvusctl.errors import SalvusError


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int

    def groups(self) -> set[int]:
        extra = {g.gr_gid for g in grp.getgrall() if self.name in g.gr_mem}
        return extra | {self.gid}


def running_as_root() -> bool:
    return os.geteuid() == 0


def current() -> Account:
    entry = pwd.getpwuid(os.geteuid())
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid)


def lookup(name: str) -> Account | None:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid)


def ensure_system_user(name: str) -> tuple[Account, bool]:
    """Return the account, creating a locked system user if it is missing."""
    found = lookup(name)
    if found:
        return found, False
    result = subprocess.run(
        ["useradd", "--system", "--user-group", "--no-create-home",
         "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name],
        capture_output=True, text=True, check=False,
    )
    found = lookup(name)
    if result.returncode != 0 or found is None:
        reason = (result.stderr.strip().splitlines() or ["useradd failed"])[-1]
        raise SalvusError(
            f"could not create the service user {name!r} ({reason}); "
            f"create it yourself (useradd --system {name}) or set [salvus] service_user"
        )
    return found, True


def can_enter(folder: Path, account: Account, groups: set[int] | None = None) -> bool:
    """Whether ``account`` may pass through ``folder`` (by its permission bits)."""
    st = folder.stat()
    groups = account.groups() if groups is None else groups
    if st.st_uid == account.uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid in groups:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def unreachable_ancestor(path: Path, account: Account) -> Path | None:
    """The first existing folder above ``path`` that ``account`` cannot enter."""
    groups = account.groups()
    for folder in reversed(Path(path).absolute().parents):
        if not folder.exists():
            break
        if not can_enter(folder, account, groups):
            return folder
    return None


def chown_tree(path: Path, account: Account) -> None:
    os.chown(path, account.uid, account.gid)
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), account.uid, account.gid, follow_symlinks=False)
