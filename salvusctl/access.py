"""Who may read what in a data folder, and the keys that admit programs.

As root, the data folder belongs to root and the service user's group: the
service user's programs (PostgreSQL, memcached, the registry and the web
frontends) read what they need through the group, and nobody else gets in.
Session uids are in no group and own nothing: they can read none of it (the
config, the logs, the supervisord files, the secrets). ``secure`` sets every
mode on each start, so a folder made by an older Salvus, or edited by hand,
is brought back in line. Without root everything is the admin's alone.

``ensure_keys`` makes the keys once: the workers' CURVE pair (secret: root
only), the frontends' (secret: readable by the service user), the folder of
public keys the workers admit (the frontends'), and supervisord's password
(the admin's only; its socket is the admin's only too).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from pathlib import Path

from sage_worker import curve
from salvusctl.accounts import Account
from salvusctl.datadir import DataDir


def ensure_keys(data: DataDir) -> list[str]:
    """Create missing CURVE keys; return the names of those made."""
    made = []
    if not data.worker_key.exists():
        curve.create_pair(data.curve, "worker")
        made.append("worker")
    if not data.web_key.exists():
        public, _ = curve.create_pair(data.curve, "web")
        data.allowed_clients.mkdir(parents=True, exist_ok=True)
        shutil.copy(public, data.allowed_clients / public.name)
        made.append("web")
    if not data.supervisor_secret.exists():
        data.supervisor_secret.touch(mode=0o600)
        data.supervisor_secret.write_text(secrets.token_hex(16) + "\n")
        made.append("supervisord")
    return made


def supervisor_password(data: DataDir) -> str | None:
    """supervisord's password (None for a folder made before it had one)."""
    try:
        return data.supervisor_secret.read_text().strip()
    except FileNotFoundError:
        return None


def secure(data: DataDir, service: Account | None) -> None:
    """Set owner and mode of everything salvusctl made in the data folder."""
    group = service.gid if service else None

    def own(path: Path, mode: int, by_group: bool = False, owner: Account | None = None):
        if not path.exists():
            return
        with contextlib.suppress(PermissionError):  # not root: leave ownership alone
            if owner is not None:
                os.chown(path, owner.uid, owner.gid)
            elif group is not None:
                os.chown(path, 0, group if by_group else 0)
        os.chmod(path, mode if group is not None else mode & 0o700)

    own(data.root, 0o750, by_group=True)
    own(data.config_file, 0o600)
    own(data.etc, 0o750, by_group=True)
    own(data.supervisord_conf, 0o600)
    own(data.programs_dir, 0o700)
    for program in data.programs_dir.glob("*.conf"):
        own(program, 0o600)
    own(data.workers_file, 0o640, by_group=True)
    own(data.run, 0o700)
    own(data.logs, 0o750, by_group=True)  # the log shipper reads them
    own(data.secrets, 0o750, by_group=True)
    own(data.pgpass, 0o600)  # salvusctl's own; libpq refuses one its group may read
    own(data.supervisor_secret, 0o600)
    own(data.tls_pem, 0o600)  # haproxy reads it as root, before it drops to the service user
    for readable in (data.dsn_file, data.log_dsn_file, data.web_secret, data.web_key,
                     data.providers_file):
        own(readable, 0o640, by_group=True)
    own(data.curve, 0o750, by_group=True)
    own(data.worker_key, 0o600)
    own(data.allowed_clients, 0o750, by_group=True)
    for public in [data.worker_public_key, *data.allowed_clients.glob("*.key")]:
        own(public, 0o640, by_group=True)
    if service is not None:
        data.var.mkdir(exist_ok=True)
        own(data.var, 0o700, owner=service)
        for path in data.var.iterdir():
            own(path, 0o600, owner=service)
    else:
        data.var.mkdir(mode=0o700, exist_ok=True)
