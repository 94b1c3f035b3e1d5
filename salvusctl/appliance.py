"""What salvusctl's commands do, on one data folder.

``Appliance`` binds a data folder, its config and its supervisord; the CLI is
a thin layer over it. ``say`` reports progress as each step happens.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import socket
import ssl
import time
import urllib.error
import urllib.request
import xmlrpc.client
from collections.abc import Callable
from pathlib import Path

from sage_worker import curve
from salvusctl import (
    access,
    accounts,
    leftovers,
    migrate,
    postgres,
    probe,
    programs,
    registry,
    tls,
    topology,
    uids,
)
from salvusctl import config as configfile
from salvusctl.datadir import DataDir
from salvusctl.errors import (
    ConfigError,
    DatabaseError,
    NotInitialized,
    PortInUse,
    ProgramFailed,
    SalvusError,
)
from salvusctl.resources import sql_dir
from salvusctl.supervisor import FAILED_STATES, Supervisor

Say = Callable[[str], None]
# When root and the data folder is out of the service user's reach, the
# embedded cluster lives here instead (PostgreSQL cannot run as root).
FALLBACK_CLUSTERS = Path("/var/lib/salvus/clusters")
START_TIMEOUT = 60.0
HEALTH_TIMEOUT = 120.0
STOP_TIMEOUT = 90.0
SILENT = 15  # seconds without a host's heartbeat (every 5 s) before its rows are not believed


def port_in_use(bind: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in bind else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((bind, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                raise ConfigError(f"cannot listen on {bind}: it is not an address of this "
                                  "host; fix [salvus] bind in the config") from None
            return True
    return False


def service_account(config: configfile.Config) -> accounts.Account | None:
    """The account for programs that must not run as root (None: not root)."""
    if not accounts.running_as_root():
        return None
    account, _ = accounts.ensure_system_user(config.get("salvus", "service_user"))
    return account


# ---------------------------------------------------------------- init


def init(path: Path, overrides: dict, force: bool, say: Say, host: str | None = None
         ) -> DataDir:
    data = DataDir(path)
    if data.exists() and host is not None and data.host() != host:
        return adopt(data, host, say)
    if data.exists():
        config = data.load_config()
        if not force:
            say(f"{data.root} is already initialized; nothing changed "
                "(`salvusctl start` applies edits of salvus.conf)")
            return data
        service = service_account(config)
        if service is not None and config.get("worker", "uid_base") == "auto":
            raw = configfile.read_raw(data.config_file)
            config = _choose_uids(data, raw, config, say, data.host())
            configfile.write(data.config_file, raw)
        access.ensure_keys(data)
        written = programs.render_all(data, config, service)
        access.secure(data, service)
        say(f"re-rendered {len(written)} supervisord files in {data.etc} "
            "(database untouched); run `salvusctl start` to apply them")
        return data
    if data.root.exists() and any(data.root.iterdir()):
        raise ConfigError(
            f"{data.root} exists, is not empty and holds no salvus.conf; "
            "choose a new or empty folder for --data"
        )
    created = not data.root.exists()
    raw = configfile.defaults(overrides)
    try:
        _create(data, raw, say, host)
    except BaseException:
        _remove_partial(data, raw, created)
        raise
    say(f"initialized {data.root}; start it with `salvusctl --data {data.root} start`")
    return data


def _create(data: DataDir, raw: dict, say: Say, host: str | None) -> None:
    config = _as_host(raw, host)
    data.check_socket_paths(config)
    if config.embedded_db:
        postgres.find_bindir()
    data.root.mkdir(parents=True, exist_ok=True)
    os.chmod(data.root, 0o755)
    for folder in (data.etc, data.run, data.logs):
        folder.mkdir(exist_ok=True)
    data.secrets.mkdir(mode=0o700, exist_ok=True)
    if host is not None:
        data.host_file.write_text(host + "\n")
    service = None
    if accounts.running_as_root():
        service, made = accounts.ensure_system_user(config.get("salvus", "service_user"))
        if made:
            say(f"created system user {service.name!r} to run the programs that need no root")
        config = _choose_uids(data, raw, config, say, host)
    if config.topology.runs_database():
        config = _create_cluster(data, raw, config, service, say, host)
    elif config.embedded_db:
        postgres.ensure_password(data)  # for the cluster's host, in its copy of secrets/
    data.dsn_file.write_text(postgres.program_dsn(data, config) + "\n")
    data.log_dsn_file.write_text(postgres.log_program_dsn(data, config) + "\n")
    data.web_secret.write_text(secrets.token_hex(32) + "\n")
    access.ensure_keys(data)
    ensure_certificate(data, config, say)
    configfile.write(data.config_file, raw)
    written = programs.render_all(data, config, service)
    access.secure(data, service)
    say(f"wrote {data.config_file} and {len(written)} supervisord files")


def _as_host(raw: dict, host: str | None) -> configfile.Config:
    """The init options' config as host ``host`` runs it."""
    config = configfile.validate(raw, "init options")
    if config.get("salvus", "hosts") and host is None:
        raise ConfigError("[salvus] hosts names several hosts; say which one this is with "
                          "`salvusctl init --host NAME`")
    return topology.on_host(config, host)


def _choose_uids(data: DataDir, raw: dict, config: configfile.Config,
                 say: Say, host: str | None) -> configfile.Config:
    """Session uids of a range no other appliance on this host holds (with
    several hosts: a range for every host's workers, of which this host's
    share is held here)."""
    instance = config.get("salvus", "instance")
    several = config.topology.several
    if config.get("worker", "uid_base") == "auto":
        raw[("worker", "uid_base")] = str(uids.pick(data.root, instance, uids.span(config)))
        config = _as_host(raw, host)
    chosen = uids.needed(config)
    uids.claim(data.root, instance, chosen, exact=several)
    if chosen:
        say(f"sessions will run as uids {chosen.start}-{chosen.stop - 1}, which no other "
            "appliance on this host uses")
    return config


def adopt(data: DataDir, host: str, say: Say) -> DataDir:
    """A copy of another host's salvus.conf and secrets/ becomes host
    ``host``'s data folder: its uids, its database cluster if the config
    places it here, its rendered files."""
    if data.host() is not None:
        raise ConfigError(f"{data.root} is host {data.host()}'s data folder; for host {host} "
                          "copy its salvus.conf and secrets/ into a new folder and run "
                          "`salvusctl init --host` there")
    raw = configfile.read_raw(data.config_file)
    config = _as_host(raw, host)
    if not config.topology.several:
        raise ConfigError(f"{data.config_file} names no [salvus] hosts; --host is for an "
                          "appliance on several hosts (docs/deploy.md)")
    missing = [p.name for p in (data.worker_key, data.web_key, data.web_secret)
               if not p.exists()]
    if missing or (config.embedded_db and not data.pgpass.exists()):
        raise ConfigError(f"{data.secrets} lacks {', '.join(missing) or 'pgpass'}; copy "
                          "secrets/ from the first host's data folder (every host shares "
                          "its keys and the database password)")
    for folder in (data.etc, data.run, data.logs):
        folder.mkdir(exist_ok=True)
    data.host_file.write_text(host + "\n")
    service = service_account(config)
    if service is not None:
        config = _choose_uids(data, raw, config, say, host)
    if config.topology.runs_database() and not data.pg_data(config).exists():
        config = _create_cluster(data, raw, config, service, say, host)
        configfile.write(data.config_file, raw)
    ensure_certificate(data, config, say)
    written = programs.render_all(data, config, service)
    access.secure(data, service)
    say(f"{data.root} is host {host}'s ({config.topology.address}): {len(written)} "
        f"files rendered; start it with `salvusctl --data {data.root} start`")
    return data


def _create_cluster(data: DataDir, raw: dict, config: configfile.Config,
                    service: accounts.Account | None, say: Say,
                    host: str | None) -> configfile.Config:
    if service and accounts.unreachable_ancestor(data.root / "pg", service):
        blocked = accounts.unreachable_ancestor(data.root / "pg", service)
        raw[("database", "cluster")] = str(FALLBACK_CLUSTERS / config.get("salvus", "instance"))
        config = _as_host(raw, host)
        data.check_socket_paths(config)
        say(f"{blocked} is closed to user {service.name!r}; the database cluster goes to "
            f"{data.cluster(config)} instead")
    port = config.get("database", "port")
    if port_in_use(config.get("salvus", "bind"), port):
        raise PortInUse(
            f"port {port} for the embedded database is in use; "
            "pick another with `salvusctl init --base-port N` or --db-port"
        )
    cluster = data.cluster(config)
    cluster.mkdir(parents=True, exist_ok=True)
    data.pg_run(config).mkdir(exist_ok=True)
    os.chmod(cluster, 0o700)
    os.chmod(data.pg_run(config), 0o700)
    if service:
        accounts.chown_tree(cluster, service)
    say("creating the embedded PostgreSQL cluster (initdb)...")
    postgres.initdb(data, config, service)
    postgres.allow_other_hosts(data, config, service)
    say("starting it once to create the database and apply migrations...")
    with postgres.temporary_server(data, config, service):
        dsn = postgres.embedded_dsn(data, config)
        postgres.wait_ready(postgres.embedded_dsn(data, config, "postgres"))
        postgres.ensure_database(data, config)
        _migrate(dsn, say)
        if not config.get("logs", "dsn"):
            _migrate_logs(dsn, say)
    return config


def ensure_certificate(data: DataDir, config: configfile.Config, say: Say) -> None:
    """haproxy's certificate: the admin's checked, or a self-signed one made once."""
    if config.get("haproxy", "enabled") != "yes":
        return
    chosen = config.get("haproxy", "certificate")
    if chosen:
        tls.check_pem(Path(chosen))
    elif not data.tls_pem.exists():
        name, *others = programs.public_hosts(config)
        tls.make_self_signed(data.tls_pem, name, tuple(others))
        say(f"made a self-signed TLS certificate for {name} (SHA-256 "
            f"{tls.fingerprint(data.tls_pem)}); name your own in [haproxy] certificate")


def _remove_partial(data: DataDir, raw: dict, created: bool) -> None:
    """Undo a failed init so that running it again starts clean."""
    chosen = raw.get(("database", "cluster"))
    if chosen and Path(chosen).is_relative_to(FALLBACK_CLUSTERS):
        shutil.rmtree(chosen, ignore_errors=True)
    if created:
        shutil.rmtree(data.root, ignore_errors=True)
    elif data.root.exists():
        for child in data.root.iterdir():
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink()


def _migrate(dsn: str, say: Say) -> None:
    conn = postgres.connect(dsn)
    try:
        done = migrate.migrate(conn, sql_dir(), say)
    finally:
        conn.close()
    if not done:
        say("database schema is up to date")


def _migrate_logs(dsn: str, say: Say) -> None:
    """The log table's series (sql/logs/) in the log database."""
    conn = postgres.connect(dsn)
    try:
        migrate.migrate(conn, sql_dir() / "logs", say, ledger=migrate.LOG_LEDGER)
    finally:
        conn.close()


# ---------------------------------------------------------------- running


def _local(bind: str) -> str:
    """Where this host reaches a program listening on ``bind``."""
    return "127.0.0.1" if bind in ("0.0.0.0", "::") else bind


def _healthy_by(url: str, deadline: float, context: ssl.SSLContext | None = None) -> bool:
    """Whether ``url`` (a /health) says ok before ``deadline`` (monotonic)."""
    while time.monotonic() <= deadline:
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as response:
                if json.loads(response.read()).get("status") == "ok":
                    return True
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    return False


def _answers(url: str, context: ssl.SSLContext | None = None) -> bool:
    """Whether ``url`` (a /health) answers at all, ok or 503 (no live worker)."""
    try:
        with urllib.request.urlopen(url, timeout=3, context=context):
            return True
    except urllib.error.HTTPError as exc:
        return exc.code == 503
    except OSError:
        return False


def _unverified() -> ssl.SSLContext:
    """For our own haproxies, whose certificate may be self-signed."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class Appliance:
    def __init__(self, path: Path, say: Say):
        self.data = DataDir(path)
        self.config = self.data.load_config()
        self.say = say
        self.supervisor = Supervisor(self.data)
        self.programs = programs.plan(self.data, self.config, None)

    @property
    def instance(self) -> str:
        return self.config.get("salvus", "instance")

    @property
    def dsn(self) -> str:
        return postgres.dsn(self.data, self.config)

    @property
    def log_dsn(self) -> str:
        return postgres.log_dsn(self.data, self.config)

    def url(self) -> str:
        if self.config.get("haproxy", "enabled") == "yes":
            return programs.haproxy_urls(self.config)[0]
        return programs.web_url(self.config, self.config.get("web", "port"))

    def states(self) -> dict[str, dict]:
        if not self.supervisor.reachable():
            return {}
        return self.supervisor.processes()

    # -- start

    @property
    def host(self) -> str:
        return self.config.topology.this

    def _mark(self) -> str | None:
        """The host leftovers must also carry: several hosts' folders of one
        instance may share a machine."""
        return self.host if self.config.topology.several else None

    def check_host(self, host: str | None) -> None:
        """``--host NAME``: this data folder must be that host's."""
        if host is None or host == self.host:
            return
        if not self.config.topology.several:
            raise ConfigError(f"{self.data.config_file} names no [salvus] hosts; drop --host "
                              "or list the hosts there (docs/deploy.md)")
        raise ConfigError(f"{self.data.root} is host {self.host}'s data folder, not {host}'s; "
                          f"use host {host}'s folder (made with `salvusctl init --host {host}`)")

    def start(self, names: tuple[str, ...]) -> None:
        self._prepare(service_account(self.config))
        chosen = programs.select(self.programs, names)
        if self.supervisor.reachable():
            # A program whose settings changed was running: it runs again after.
            reloaded = self.supervisor.apply_config_changes(self.say)
            chosen += [p for p in programs.select(self.programs, tuple(reloaded))
                       if p not in chosen]
        else:
            leftovers.terminate(self.instance, self.say, host=self._mark())
            self._check_ports(chosen, running={})
            self.say("starting supervisord...")
            self.supervisor.start_daemon()
        if self.config.topology.runs_database():
            database = programs.select(self.programs, ("postgres",))
            if database[0] not in chosen:
                self.say("postgres: starting it too (every program's registry needs it)")
            self._start(database)
            postgres.wait_ready(postgres.embedded_dsn(self.data, self.config, "postgres"))
            postgres.ensure_database(self.data, self.config)
        elif self.config.embedded_db:
            self._wait_for_database_host()
        _migrate(self.dsn, self.say)
        self._migrate_logs()
        self._start([p for p in chosen if p.name != "postgres"])
        self._wait_healthy([p for p in chosen if p.kind == "web"])
        self._wait_serving([p for p in chosen if p.kind == "haproxy"])
        self._confirm([p.name for p in chosen])

    def _wait_for_database_host(self) -> None:
        """The embedded cluster runs on another host: it must answer."""
        top = self.config.topology
        where = f"{top.hosts[top.database]}:{self.config.get('database', 'port')}"
        self.say(f"waiting for the database on host {top.database} ({where})...")
        try:
            postgres.wait_ready(self.dsn, timeout=START_TIMEOUT)
        except DatabaseError as exc:
            raise DatabaseError(f"the database on host {top.database} ({where}) does not "
                                f"answer ({exc.message}); start host {top.database} first "
                                "(`salvusctl start` in its data folder)") from None

    def _prepare(self, service: accounts.Account | None) -> None:
        """Keys, session uids, rendered files and permissions as the config asks."""
        made = access.ensure_keys(self.data)
        if made:
            self.say(f"made the keys of: {', '.join(made)}")
        if service is not None and self.config.get("worker", "isolation") == "full":
            if self.config.get("worker", "uid_base") == "auto":
                raise ConfigError("this data folder has no session uids yet; run "
                                  "`salvusctl init --force` as root to choose them")
            uids.claim(self.data.root, self.instance, uids.needed(self.config),
                       exact=self.config.topology.several)
        if self.config.topology.runs_database() and \
                postgres.allow_other_hosts(self.data, self.config, service):
            self.say("the database now takes the other hosts' connections (TLS, password)")
        for path, dsn in ((self.data.dsn_file, postgres.program_dsn(self.data, self.config)),
                          (self.data.log_dsn_file,
                           postgres.log_program_dsn(self.data, self.config))):
            if not path.exists() or path.read_text() != dsn + "\n":
                path.write_text(dsn + "\n")
        if programs.out_of_date(self.data, self.config, service):
            # salvus.conf (or salvus itself) changed since the files were made.
            written = programs.render_all(self.data, self.config, service)
            self.say(f"updated {len(written)} supervisord files from {self.data.config_file}")
        ensure_certificate(self.data, self.config, self.say)
        access.secure(self.data, service)

    def _confirm(self, answered: list[str]) -> None:
        """Say what status would say: the URL only when every program runs."""
        states = self.supervisor.processes()
        down = [name for name in answered if states[name]["statename"] != "RUNNING"]
        for name in down:
            self._fail(name, states[name])
        others = sorted(n for n, info in states.items() if info["statename"] != "RUNNING")
        if others:
            self.say(f"started {', '.join(answered)}; not running: {', '.join(others)} "
                     "(`salvusctl start` starts everything)")
        else:
            self.say(f"Salvus is running: open {self.url()}{self._certificate_note()}")

    def _certificate_note(self) -> str:
        if self.config.get("haproxy", "enabled") != "yes" or \
                self.config.get("haproxy", "certificate"):
            return ""
        return (" (self-signed certificate, SHA-256 fingerprint "
                f"{tls.fingerprint(self.data.tls_pem)}: compare it with the one the browser "
                "shows before you accept it)")

    def _wait_serving(self, doors: list[programs.Program]) -> None:
        """Each haproxy answers https with a healthy frontend behind it."""
        context = _unverified()
        host = _local(programs.haproxy_bind(self.config))
        deadline = time.monotonic() + HEALTH_TIMEOUT
        for door in doors:
            url = f"https://{programs.bracketed(host)}:{door.ports[1]}/health"
            if not _healthy_by(url, deadline, context):
                raise ProgramFailed(f"{door.name} runs but does not serve {url}; see "
                                    f"{self._log(door.name)}")

    def _wait_healthy(self, frontends: list[programs.Program]) -> None:
        """RUNNING is not ready: wait until each frontend answers /health with a
        live worker (workers take seconds to load the math stack)."""
        if not frontends:
            return
        self.say("waiting for the workers to load the math stack...")
        host = _local(self.config.get("salvus", "bind"))
        deadline = time.monotonic() + HEALTH_TIMEOUT
        for program in frontends:
            if not _healthy_by(f"http://{programs.bracketed(host)}:{program.ports[0]}/health",
                               deadline):
                raise ProgramFailed(
                    f"{program.name} runs but reports no live worker after "
                    f"{HEALTH_TIMEOUT:.0f}s; see {self.data.logs}/worker0.log and "
                    f"{self.data.logs}/{program.name}.log")

    def _check_ports(self, chosen: list[programs.Program], running: dict) -> None:
        bind = self.config.get("salvus", "bind")
        for program in chosen:
            if running.get(program.name, {}).get("statename") in ("RUNNING", "STARTING"):
                continue
            for port in program.ports:
                if port_in_use(bind, port):
                    raise PortInUse(
                        f"port {port} of {program.name} is in use by another program; "
                        f"stop that program or change the port in {self.data.config_file}"
                    )

    def _start(self, chosen: list[programs.Program]) -> None:
        states = self.supervisor.processes()
        self._check_ports(chosen, states)
        waiting = []
        for program in chosen:
            if states.get(program.name, {}).get("statename") == "RUNNING":
                self._report(program.name, states[program.name], "already running")
                continue
            try:
                self.supervisor.call("startProcess", program.name, False)
            except xmlrpc.client.Fault as fault:
                if "ALREADY_STARTED" not in fault.faultString:
                    raise ProgramFailed(f"{program.name}: {fault.faultString}") from None
            waiting.append(program.name)
        self._wait_running(waiting)

    def _wait_running(self, names: list[str]) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        pending = list(names)
        while pending:
            states = self.supervisor.processes()
            for name in list(pending):
                info = states[name]
                if info["statename"] == "RUNNING":
                    self._report(name, info, "started")
                    pending.remove(name)
                elif info["statename"] in FAILED_STATES:
                    self._fail(name, info)
            if pending and time.monotonic() > deadline:
                self._fail(pending[0], states[pending[0]], timed_out=True)
            time.sleep(0.1)

    def _fail(self, name: str, info: dict, timed_out: bool = False) -> None:
        with contextlib.suppress(xmlrpc.client.Fault):
            self.supervisor.call("stopProcess", name, True)
        log = self._log(name)
        said = probe.last_error(log)
        if said:  # the program named the problem and the fix itself
            raise ProgramFailed(f"{name} stopped: {said.removeprefix('Error: ')}")
        lines = self.supervisor.tail_log(name, stderr=name == "registry")
        if lines:
            self.say(f"{name}: last lines of {log}:")
            for line in lines[-12:]:
                self.say(f"    {line}")
        why = "did not reach RUNNING in time" if timed_out else f"failed ({info['statename']})"
        raise ProgramFailed(
            f"{name} {why}; fix the cause shown in {log} and run `salvusctl start {name}`"
        )

    def _report(self, name: str, info: dict, what: str) -> None:
        self.say(f"{name:<10} {info['statename']:<8} pid {info['pid']:<7} {what}")

    # -- stop

    def stop(self, names: tuple[str, ...]) -> None:
        if not self.supervisor.reachable():
            if not leftovers.terminate(self.instance, self.say, host=self._mark()):
                self.say("supervisord is not running; nothing to stop")
            return
        chosen = programs.select(self.programs, names)
        self._stop(chosen)
        if not names:
            self.say("stopping supervisord...")
            self.supervisor.shutdown()
            self.say("supervisord stopped")

    def _stop(self, chosen: list[programs.Program]) -> None:
        tiers = sorted({programs.START_ORDER[p.kind] for p in chosen}, reverse=True)
        for tier in tiers:
            group = [p.name for p in chosen if programs.START_ORDER[p.kind] == tier]
            states = self.supervisor.processes()
            for name in group:
                try:
                    self.supervisor.call("stopProcess", name, False)
                except xmlrpc.client.Fault as fault:
                    if "NOT_RUNNING" not in fault.faultString:
                        raise ProgramFailed(f"{name}: {fault.faultString}") from None
            self._wait_stopped(group, states)

    def _wait_stopped(self, names: list[str], before: dict) -> None:
        deadline = time.monotonic() + STOP_TIMEOUT
        pending = list(names)
        while pending:
            states = self.supervisor.processes()
            for name in list(pending):
                if states[name]["statename"] not in ("RUNNING", "STOPPING", "STARTING",
                                                     "BACKOFF"):
                    was = before.get(name, {}).get("pid") or "-"
                    self.say(f"{name:<10} {states[name]['statename']:<8} (was pid {was})")
                    pending.remove(name)
            if pending and time.monotonic() > deadline:
                raise ProgramFailed(
                    f"{pending[0]} did not stop within {STOP_TIMEOUT:.0f}s; see "
                    f"{self.data.logs / (pending[0] + '.log')}"
                )
            time.sleep(0.1)

    def restart(self, names: tuple[str, ...]) -> None:
        if not self.supervisor.reachable():
            raise SalvusError(
                f"supervisord of {self.data.root} is not running; use `salvusctl start`"
            )
        chosen = programs.select(self.programs, names)
        self._stop(chosen)
        for program in chosen:
            self._start([program])
            if program.name == "postgres":
                postgres.wait_ready(self.dsn)

    # -- status and check

    def status(self, names: tuple[str, ...]) -> list[dict]:
        chosen = programs.select(self.programs, names)
        states = self.states()
        down = "supervisord is not running"
        if not states and leftovers.find(self.instance, self._mark()):
            down += " but some of its processes are; `salvusctl start` replaces them"
        now = time.time()
        rows = []
        for program in chosen:
            info = states.get(program.name)
            state = info["statename"] if info else "STOPPED"
            running = state == "RUNNING"
            row = {
                "name": program.name, "kind": program.kind, "state": state,
                "pid": info["pid"] if info and running else None,
                "user": probe.user_of(info["pid"]) if info and running else None,
                "uptime": int(now - info["start"]) if info and running else None,
                "detail": info["description"] if info else down,
                "error": None if running else probe.last_error(self._log(program.name)),
            }
            if program.kind == "worker":
                pong = self._ping(program) if running else None
                row["isolation"] = pong.get("isolation") if pong else None
            rows.append(row)
        return rows

    def every_host(self) -> list[dict]:
        """Every host's programs, from the registry: a host whose registry has
        not beaten for SILENT seconds is not known to run anything."""
        conn = postgres.connect(self.dsn)
        try:
            rows = registry.every_host(conn, self.instance)
        except Exception as exc:
            if type(exc).__module__.startswith("psycopg2"):
                raise DatabaseError(f"the registry could not be read "
                                    f"({str(exc).splitlines()[0]}); run `salvusctl db migrate`"
                                    ) from None
            raise
        finally:
            conn.close()
        for row in rows:
            if row["heard"] is None or row["heard"] > SILENT:
                row["state"] = "UNKNOWN"
                row["detail"] = ("its host was never heard from" if row["heard"] is None else
                                 f"its host was last heard from {row['heard']}s ago")
        return rows

    def _log(self, name: str) -> Path:
        return self.data.logs / f"{name}.log"

    def _ping(self, program: programs.Program) -> dict | None:
        try:
            server = curve.load_public(self.data.worker_public_key)
            client = curve.load_pair(self.data.web_key)
        except (OSError, ValueError):
            return None
        host = self.config.get("salvus", "bind")
        host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        return probe.ping_worker(f"tcp://{host}:{program.ports[0]}", server, client)

    def problems(self) -> tuple[list[str], list[str]]:
        """What keeps the appliance from serving as configured, and notes on
        what the admin chose knowingly; one line each, naming the fix."""
        found, notes = [], []
        wanted = self.config.get("worker", "isolation")
        for row in self.status(()):
            name = row["name"]
            if row["state"] != "RUNNING":
                why = row["error"] or row["detail"]
                found.append(f"{name} is {row['state']}: {why}")
            elif row["kind"] == "worker":
                applied = row["isolation"]
                if applied is None:
                    found.append(f"{name} runs but does not answer; see {self._log(name)}")
                elif applied["mode"] != wanted:
                    found.append(f"{name} applies isolation {applied['mode']}, the config "
                                 f"asks {wanted}; run `salvusctl restart {name}`")
                elif applied["mode"] == "none":
                    notes.append(f"{name} runs sessions without isolation ([worker] "
                                 "isolation = none): they share its user, files, processes "
                                 "and network")
        if self.config.topology.several:
            found += self._other_hosts_problems()
        return found, notes

    def _other_hosts_problems(self) -> list[str]:
        """With several hosts: what this host cannot reach of the others'
        programs (asked over the network, as their users reach them), and what
        their registries say or no longer say."""
        found = []
        others = [p for p in programs.everywhere(self.data, self.config, None)
                  if p.host != self.host]
        for program in others:
            trouble = self._unreachable(program)
            if trouble:
                found.append(f"{program.name} on host {program.host} {trouble}")
        try:
            rows = self.every_host()
        except DatabaseError as exc:
            return [*found, f"the registry cannot be read from here: {exc.message}"]
        silent = {}
        for row in rows:
            if row["host"] == self.host or row["state"] == "RUNNING":
                continue
            if row["state"] == "UNKNOWN":
                silent[row["host"]] = row["detail"]
            else:
                found.append(f"{row['name']} on host {row['host']} is {row['state']} "
                             f"(its registry says); run `salvusctl start` on {row['host']}")
        found += [f"host {host}: {detail}; is it up, and its registry running?"
                  for host, detail in sorted(silent.items())]
        return found

    def _unreachable(self, program: programs.Program) -> str | None:
        """How ``program`` (on another host) fails to answer, or None."""
        if program.kind == "worker":
            try:
                server = curve.load_public(self.data.worker_public_key)
                client = curve.load_pair(self.data.web_key)
            except (OSError, ValueError):
                return None
            if probe.ping_worker(program.values["endpoint"], server, client) is None:
                return f"does not answer at {program.values['endpoint']}"
        elif program.kind == "web":
            url = program.values["http"] + "health"
            if not _answers(url):
                return f"does not answer at {url}"
        elif program.kind == "haproxy":
            address = programs.bracketed(self.config.topology.hosts[program.host])
            url = f"https://{address}:{program.ports[1]}/health"
            if not _answers(url, _unverified()):
                return f"does not answer at {url}"
        return None

    def _require_database(self, states: dict) -> None:
        if self.config.topology.runs_database() and \
                states.get("postgres", {}).get("statename") != "RUNNING":
            raise DatabaseError(
                "the embedded database is not running; start it with `salvusctl start postgres`"
            )

    def check(self) -> list[str]:
        states = self.states()
        self._require_database(states)
        actual = {}
        for program in self.programs:
            actual[program.name] = states.get(
                program.name, {"statename": "STOPPED", "pid": 0}
            )
        conn = postgres.connect(self.dsn)
        try:
            instance, host = self.config.get("salvus", "instance"), \
                self.config.get("salvus", "host")
            return registry.check(conn, instance, host, actual,
                                  tuple(self.config.topology.hosts)) + \
                registry.check_browsers(conn, instance, host, actual)
        except Exception as exc:
            if type(exc).__module__.startswith("psycopg2"):
                raise DatabaseError(
                    f"the registry could not be read ({str(exc).splitlines()[0]}); "
                    "run `salvusctl db migrate`"
                ) from None
            raise
        finally:
            conn.close()

    def message(self, to: str, target: str | None, text: str):
        """Send ``text`` to browsers through the frontends' bus (a
        messaging.Outcome)."""
        from salvusctl import messaging  # imports web's bus: only for this command

        if not self.data.frontends_file.exists():
            raise NotInitialized(f"{self.data.frontends_file} is missing; run "
                                 "`salvusctl start` first")
        return messaging.send(self.data.frontends_file, self.data.web_key, to, target, text)

    def migrate(self) -> None:
        self._require_database(self.states())
        _migrate(self.dsn, self.say)
        _migrate_logs(self.log_dsn, self.say)

    def _migrate_logs(self) -> None:
        """A log database that is away does not keep anything from starting:
        the shipper holds the lines until it is back (and migrated)."""
        try:
            _migrate_logs(self.log_dsn, self.say)
        except DatabaseError as exc:
            self.say(f"note: the log database is not reachable ({exc.message}); the "
                     "programs start, and the shipper keeps their lines until it is")
