"""``salvusctl install-service``: a systemd unit that starts the appliance at boot.

The unit (``salvus-<instance>.service``, rendered from
etc/systemd/salvus.service.in, every key commented) runs ``salvusctl --data
DATA start`` as a ``Type=forking`` service: ``start`` returns once
supervisord has daemonized and the programs run, and supervisord's pid file
tells systemd the main process. supervisord restarts programs itself;
systemd restarts the whole appliance only when supervisord dies.

A system unit goes to /etc/systemd/system (root only) and is enabled when
systemd runs (PID 1 is systemd: /run/systemd/system exists); elsewhere (a
container) the file is written and the admin is told that it could not be
enabled, and why. A user unit (``--user-unit``) goes to
~/.config/systemd/user, for an appliance run without root.

``install`` takes the file system's root and the command runner as
parameters, so that tests write into a folder of their own, never /etc.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from string import Template

from salvusctl import accounts
from salvusctl.appliance import HEALTH_TIMEOUT, START_TIMEOUT
from salvusctl.config import Config
from salvusctl.datadir import DataDir
from salvusctl.errors import ConfigError, SalvusError
from salvusctl.resources import systemd_templates_dir

TEMPLATE = "salvus.service.in"
SYSTEM_UNITS = Path("etc/systemd/system")
USER_UNITS = Path(".config/systemd/user")
# `salvusctl start`: supervisord, then the database (a minute to start, a
# minute to answer), migrations, the programs (a minute), the workers' math
# stack (HEALTH_TIMEOUT); twice that leaves room for a slow boot.
START_BUDGET = int(2 * (4 * START_TIMEOUT + HEALTH_TIMEOUT))
# `salvusctl stop`: programs stop tier by tier, each within its stopwaitsecs
# (60 s at most, PostgreSQL), then supervisord.
STOP_BUDGET = 300
Run = Callable[..., subprocess.CompletedProcess]


def unit_name(config: Config) -> str:
    return f"salvus-{config.get('salvus', 'instance')}.service"


def quote(word: str) -> str:
    """One argument of an Exec*= line, as systemd splits them: specifiers
    (%) and variables ($) escaped, quoted when it holds blanks or quotes."""
    word = word.replace("%", "%%").replace("$", "$$")
    if word and not re.search(r"[\s\"'\\;]", word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def salvusctl_command() -> list[str]:
    """How this very salvusctl is run: the console script beside its Python,
    else that Python with -m salvusctl."""
    python = Path(sys.executable).absolute()
    script = python.parent / "salvusctl"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [str(python), "-m", "salvusctl"]


def render(data: DataDir, config: Config, user_unit: bool = False,
           environ: dict[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    command = [*salvusctl_command(), "--data", str(data.root)]
    if user_unit:
        network = ("# After, Wants: none: a user's units cannot wait for the system's\n"
                   "# network-online.target.")
    else:
        after = "network-online.target"
        note = ""
        if not config.embedded_db:
            after += " postgresql.service"
            note = ("\n# postgresql.service: ordering only, so that when [database] dsn "
                    "is this\n# host's own PostgreSQL it runs first; nothing else changes.")
        network = ("# After, Wants: start once the network is up: the programs listen on\n"
                   "# [salvus] bind, which may be an address the network brings." + note +
                   f"\nAfter={after}\nWants=network-online.target")
    bindir = environ.get("SALVUS_PG_BINDIR")
    if bindir:
        environment = ("# Environment: SALVUS_PG_BINDIR as when the unit was installed: the\n"
                       "# PostgreSQL binaries that salvusctl found then, and runs the\n"
                       "# embedded cluster with.\n"
                       f"Environment={quote('SALVUS_PG_BINDIR=' + bindir)}")
    else:
        environment = ("# Environment: none; salvusctl finds PostgreSQL's binaries itself "
                       "(set\n# SALVUS_PG_BINDIR when installing to choose them).")
    values = {
        "instance": config.get("salvus", "instance"),
        "data": str(data.root).replace("%", "%%"),
        "scope": "a user unit, run by the user's own systemd" if user_unit
                 else "a system unit, run as root",
        "network_lines": network,
        "pidfile": str(data.supervisor_pid).replace("%", "%%"),
        "start": " ".join(quote(word) for word in [*command, "start"]),
        "stop": " ".join(quote(word) for word in [*command, "stop"]),
        "start_timeout": str(START_BUDGET),
        "stop_timeout": str(STOP_BUDGET),
        "environment_lines": environment,
        "wanted_by": "default.target" if user_unit else "multi-user.target",
        "when": "the user's login (at boot with `loginctl enable-linger`)" if user_unit
                else "boot",
        "systemctl_scope": "--user " if user_unit else "",
    }
    text = (systemd_templates_dir() / TEMPLATE).read_text()
    try:
        return Template(text).substitute(values)
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"template {TEMPLATE} is broken ({exc!r}); reinstall salvus") from None


@dataclass(frozen=True)
class Installed:
    path: Path
    changed: bool
    enabled: bool


def install(data: DataDir, config: Config, say: Callable[[str], None], user_unit: bool = False,
            root: Path = Path("/"), home: Path | None = None, run: Run = subprocess.run,
            is_root: bool | None = None) -> Installed:
    """Write the unit, then daemon-reload and enable it when systemd runs."""
    name = unit_name(config)
    is_root = accounts.running_as_root() if is_root is None else is_root
    if user_unit:
        folder = (Path.home() if home is None else home) / USER_UNITS
    else:
        if not is_root:
            raise SalvusError(f"writing {Path('/') / SYSTEM_UNITS / name} takes root; run "
                              "`sudo salvusctl install-service`, or see the unit with --print "
                              "(--user-unit installs it for your own user)")
        folder = root / SYSTEM_UNITS
    path = folder / name
    text = render(data, config, user_unit)
    changed = not path.exists() or path.read_text() != text
    if changed:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".{name}.new")
            temporary.write_text(text)
            os.chmod(temporary, 0o644)
            temporary.replace(path)
        except OSError as exc:
            raise SalvusError(f"cannot write {path} ({exc.strerror})") from None
    say(f"{'wrote' if changed else 'unchanged:'} {path}")
    scope = ["--user"] if user_unit else []
    if not (root / "run/systemd/system").is_dir():
        say(f"note: systemd is not running here (no /run/systemd/system: a container?), so "
            f"{name} was not enabled; on a host that boots with systemd run `systemctl "
            f"{'--user ' if user_unit else ''}daemon-reload && systemctl "
            f"{'--user ' if user_unit else ''}enable {name}`")
        return Installed(path, changed, False)
    for argv in (["systemctl", *scope, "daemon-reload"], ["systemctl", *scope, "enable", name]):
        try:
            result = run(argv, capture_output=True, text=True, check=False,
                         stdin=subprocess.DEVNULL, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SalvusError(f"`{' '.join(argv)}` could not run ({exc}); {path} is written: "
                              "enable it by hand") from None
        if result.returncode != 0:
            said = (result.stderr or result.stdout or "").strip().splitlines()
            detail = said[-1] if said else f"exit status {result.returncode}"
            raise SalvusError(f"`{' '.join(argv)}` failed ({detail}); {path} is written")
    say(f"enabled {name}: the appliance starts at "
        f"{'login (or boot with `loginctl enable-linger`)' if user_unit else 'boot'}; "
        f"`systemctl {'--user ' if user_unit else ''}start {name}` starts it now "
        "(stop it with `salvusctl stop` first if it runs)")
    return Installed(path, changed, True)
