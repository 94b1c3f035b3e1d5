"""The supervisord programs of one data folder, and their rendered files.

Names are stable and say what a program is: ``postgres`` (embedded database
only), ``registry`` (the component-registry event listener), ``shipper``
(puts the log files' lines into the log table), ``haproxy0``... (the TLS
door in front of the frontends, when enabled), ``web0``...,
``worker0``.... Each is its own supervisord group, so every one of them can be
started, stopped and restarted alone. A kind name (``web``, ``worker``)
stands for all programs of that kind on the command line.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import shutil
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from sage_worker import curve
from salvusctl import access, postgres, uids
from salvusctl.accounts import Account
from salvusctl.config import Config
from salvusctl.datadir import DataDir
from salvusctl.errors import ConfigError, UnknownProgram
from salvusctl.resources import templates_dir

# Start in this order; stop in the reverse one (database last).
START_ORDER = {"postgres": 0, "registry": 1, "shipper": 1, "memcached": 1, "worker": 2,
               "web": 3, "haproxy": 4}


def kind_of(name: str) -> str:
    return re.sub(r"\d+$", "", name)


@dataclass(frozen=True)
class Program:
    name: str
    template: str
    values: dict[str, str] = field(compare=False)
    ports: tuple[int, ...] = ()

    @property
    def kind(self) -> str:
        return kind_of(self.name)


def _supervisor_value(text: str) -> str:
    """supervisord expands %(name)s in values: a literal % is written %%."""
    return text.replace("%", "%%")


def _user_line(account: Account | None) -> str:
    if account is None:
        return "; user: not set; the program runs as supervisord's own user"
    return f"user = {account.name}"


def _launcher(data: DataDir, account: Account | None) -> str:
    """As root, what a service-user program's command starts with: it drops to
    the service user in a view of the file system where it can read the
    install and the data folder (salvusctl/runas.py)."""
    if account is None:
        return ""
    return shlex.join([sys.executable, "-m", "salvusctl.runas", "--user", account.name,
                       "--show", str(data.root), "--home", str(data.var), "--"]) + " "


def plan(data: DataDir, config: Config, service: Account | None) -> list[Program]:
    """Every program this data folder runs, in start order."""
    common = {
        "data": str(data.root),
        "logs": str(data.logs),
        "python": sys.executable,
        "bind": config.get("salvus", "bind"),
        "instance": config.get("salvus", "instance"),
        "host": config.get("salvus", "host"),
        "dsn_file": str(data.dsn_file),
        **log_rotation(config),
    }
    found: list[Program] = []
    if config.embedded_db:
        args = shlex.join(postgres.server_args(data, config))
        found.append(Program("postgres", "postgres.conf.in", {
            **common, "name": "postgres",
            "command": _supervisor_value(f"{postgres.find_bindir() / 'postgres'} {args}"),
            "user_line": _user_line(service), "cluster": str(data.cluster(config)),
        }, (config.get("database", "port"),)))
    memcached = None
    launcher = _launcher(data, service)
    if config.get("memcached", "enabled") == "yes":
        # A unix socket only the service user may reach: memcached has no
        # authentication, and what it holds is served to browsers. It starts
        # as the service user in the view that shows it the data folder, which
        # may lie in a folder closed to that user (root's home).
        memcached = str(data.memcached_socket)
        found.append(Program("memcached", "memcached.conf.in", {
            **common, "name": "memcached",
            "command": launcher + shlex.join([
                _memcached_binary(), "-s", memcached, "-a", "0700", "-U", "0",
                "-m", str(config.get("memcached", "memory_mb"))]),
        }))
    found.append(Program("registry", "registry.conf.in", {
        **common, "name": "registry", "spool": str(data.registry_spool),
        "buffer": str(config.get("registry", "buffer")), "launcher": launcher,
    }))
    found.append(Program("shipper", "shipper.conf.in", {
        **common, "name": "shipper", "launcher": launcher,
        "log_dsn_file": str(data.log_dsn_file),
        "keep_days": str(config.get("logs", "keep_days")),
    }))
    for i in range(config.get("worker", "count")):
        port = config.get("worker", "port") + i
        publish = config.get("worker", "publish_port") + i
        options = [*worker_options(data, config, i),
                   "--publish", f"tcp://{config.get('salvus', 'bind')}:{publish}"]
        found.append(Program(f"worker{i}", "worker.conf.in", {
            **common, "name": f"worker{i}", "index": str(i), "port": str(port),
            "options": _supervisor_value(shlex.join(options)),
        }, (port, publish)))
    for i in range(config.get("web", "count")):
        port = config.get("web", "port") + i
        bus = bus_port(config, i)
        options = [
            *web_options(data, config, memcached),
            "--frontends-file", str(data.frontends_file),
            "--bus-bind", f"tcp://{config.get('salvus', 'bind')}:{bus}",
            "--instance", config.get("salvus", "instance"),
            "--host", config.get("salvus", "host"),
            "--public-url", web_url(config, port)]
        if config.get("haproxy", "enabled") == "yes":
            # Pages come in, and fail over, through the haproxies, whose
            # X-Forwarded-For names the browser (per-IP quotas).
            options += ["--entries", *haproxy_urls(config),
                        "--trusted-proxies", *haproxy_sources(config)]
        found.append(Program(f"web{i}", "web.conf.in", {
            **common, "name": f"web{i}", "index": str(i), "port": str(port),
            "workers_file": str(data.workers_file), "launcher": launcher,
            "options": _supervisor_value(shlex.join(options)),
        }, (port, bus)))
    if config.get("haproxy", "enabled") == "yes":
        found += haproxies(data, config, service, common,
                           [p for p in found if p.kind == "web"])
    # salvusctl message binds this port while it sends: no program may take it.
    _check_ports_distinct([*found, Program("salvusctl message", "", {},
                                           (config.get("web", "bus_port"),))])
    return found


def haproxies(data: DataDir, config: Config, service: Account | None, common: dict,
              frontends: list[Program]) -> list[Program]:
    """haproxy0, ...: each with its config file's text in ``values["config"]``."""
    bind = config.get("haproxy", "bind") or config.get("salvus", "bind")
    backend = config.get("salvus", "bind")
    backend = "127.0.0.1" if backend in ("0.0.0.0", "::") else backend
    servers = "\n".join(f"    server {p.name} {_host_port(backend, p.ports[0])} check"
                         for p in frontends)
    user = (f"    user {service.name}\n    group {service.name}" if service is not None
            else "    # (not root: haproxy runs as the admin who started supervisord)")
    certificate = config.get("haproxy", "certificate")
    found = []
    for i in range(config.get("haproxy", "count")):
        http, https = (config.get("haproxy", "http_port") + i,
                       config.get("haproxy", "https_port") + i)
        name = f"haproxy{i}"
        text = render_template("haproxy.cfg.in", {
            "index": str(i), "data": str(data.root), "name": name, "user_lines": user,
            "bind": bracketed(bind), "http_port": str(http), "https_port": str(https),
            "https_suffix": "" if https == 443 else f":{https}",
            "pem": certificate or str(data.tls_pem), "servers": servers,
            # HSTS only with the admin's certificate: a self-signed one is
            # accepted by hand, and HSTS would forbid that.
            "hsts_line": ("    http-response set-header Strict-Transport-Security "
                          '"max-age=31536000"') if certificate else
                         "    # (no HSTS: the certificate is self-signed)",
        })
        cfg = data.etc / f"{name}.cfg"
        found.append(Program(name, "haproxy.conf.in", {
            **common, "name": name, "index": str(i), "haproxy": _haproxy_binary(),
            "cfg": str(cfg), "config": text,
            "digest": hashlib.sha256(text.encode()).hexdigest()[:16],
        }, (http, https)))
    return found


def bracketed(address: str) -> str:
    """An address as it goes before :port (IPv6 in brackets)."""
    return f"[{address}]" if ":" in address else address


def _host_port(address: str, port: int) -> str:
    return f"{bracketed(address)}:{port}"


def _haproxy_binary() -> str:
    found = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(found).exists():
        raise ConfigError("haproxy is not installed; install it (apt-get install haproxy) "
                          "or set [haproxy] enabled = no in the config")
    return found


def haproxy_sources(config: Config) -> list[str]:
    """The addresses the haproxies' connections to the frontends come from."""
    backend = config.get("salvus", "bind")
    return ["127.0.0.1", "::1"] if backend in ("127.0.0.1", "0.0.0.0", "::", "::1") \
        else [backend]


def public_host(config: Config) -> str:
    """The name browsers use for the haproxies (and the certificate's)."""
    chosen = config.get("haproxy", "public_name")
    if chosen:
        return chosen
    bind = config.get("haproxy", "bind") or config.get("salvus", "bind")
    return socket.gethostname() if bind in ("0.0.0.0", "::") else bind


def haproxy_urls(config: Config) -> list[str]:
    """The https URLs of this host's haproxies, haproxy0's first."""
    urls = []
    for i in range(config.get("haproxy", "count")):
        port = config.get("haproxy", "https_port") + i
        urls.append(f"https://{bracketed(public_host(config))}{'' if port == 443 else f':{port}'}/")
    return urls


def log_rotation(config: Config) -> dict[str, str]:
    """supervisord's rotation of every log file, from [logs]."""
    return {"log_bytes": f"{config.get('logs', 'file_mb')}MB",
            "log_backups": str(config.get("logs", "file_backups"))}


def bus_port(config: Config, index: int) -> int:
    """The port frontend ``index`` publishes on (bus_port itself is salvusctl's)."""
    return config.get("web", "bus_port") + 1 + index


def reachable_host(config: Config) -> str:
    """Where this host's programs are reached: the bind address, or this
    host's name when they listen on every address."""
    bind = config.get("salvus", "bind")
    host = socket.gethostname() if bind in ("0.0.0.0", "::") else bind
    return f"[{host}]" if ":" in host else host


def web_url(config: Config, port: int) -> str:
    return f"http://{reachable_host(config)}:{port}/"


def bus_endpoint(config: Config, port: int) -> str:
    return f"tcp://{reachable_host(config)}:{port}"


def _memcached_binary() -> str:
    found = shutil.which("memcached") or "/usr/bin/memcached"
    if not Path(found).exists():
        raise ConfigError("memcached is not installed; install it (apt-get install memcached) "
                          "or set [memcached] enabled = no in the config")
    return found


WORKER_LIMITS = ("max_sessions", "wall_time", "idle_timeout", "cpu_seconds", "memory_mb",
                 "processes", "file_size_mb", "open_files", "output_bytes", "interrupt_grace",
                 "disk_mb", "disk_files")
WEB_OPTIONS = ("sessions_per_browser", "sessions_per_ip", "api_timeout",
               "api_max_code", "api_concurrent", "api_concurrent_per_ip", "api_rate_per_ip",
               "api_rate_total", "logs_mb", "images_mb", "server_names", "allowed_origins")


def worker_options(data: DataDir, config: Config, index: int) -> list[str]:
    """The worker's command-line settings, all taken from the config."""
    options = ["--sessions-dir", str(data.sessions(config) / f"worker{index}"),
               "--network", config.get("worker", "network"),
               "--isolation", config.get("worker", "isolation"),
               "--server-key", str(data.worker_key), "--clients", str(data.allowed_clients)]
    engine = config.get("worker", "engine")
    if engine != "auto":
        options += ["--engine", engine]
    # Each worker needs a uid for every session and every spare.
    per_worker = config.get("worker", "max_sessions") + config.get("worker", "spares")
    base = config.get("worker", "uid_base")
    first = (base if isinstance(base, int) else uids.FIRST) + index * per_worker
    options += ["--uid-range", f"{first}:{first + per_worker - 1}",
                "--spares", str(config.get("worker", "spares"))]
    for name in WORKER_LIMITS:
        options += ["--" + name.replace("_", "-"), str(config.get("worker", name))]
    # Sessions live in the workers: how long one waits for a page is theirs to keep.
    options += ["--linger", str(config.get("web", "session_linger"))]
    return options


def web_options(data: DataDir, config: Config, memcached: str | None) -> list[str]:
    """A frontend's command-line settings, all taken from the config."""
    options = ["--curve-key", str(data.web_key)]
    if memcached:
        options += ["--memcached", memcached]
    for name in WEB_OPTIONS:
        value = str(config.get("web", name))
        if name == "server_names" and config.get("haproxy", "enabled") == "yes":
            value = " ".join(filter(None, [value, config.get("haproxy", "public_name")]))
        options += ["--" + name.replace("_", "-"), value]
    return options


def _check_ports_distinct(found: list[Program]) -> None:
    owner: dict[int, str] = {}
    for program in found:
        for port in program.ports:
            if port > 65535:
                raise ConfigError(
                    f"{program.name} would listen on port {port}, beyond 65535; "
                    "lower its base port in the config"
                )
            if port in owner:
                raise ConfigError(
                    f"{owner[port]} and {program.name} would both use port {port}; "
                    "move [web] port, [web] bus_port, [worker] port, [worker] "
                    "publish_port, [haproxy] http_port and https_port or [database] "
                    "port apart in the config"
                )
            owner[port] = program.name


def select(found: list[Program], names: tuple[str, ...]) -> list[Program]:
    """Programs named on the command line (all when none); kind names expand."""
    if not names:
        return list(found)
    chosen: list[Program] = []
    for name in names:
        matches = [p for p in found if p.name == name or p.kind == name]
        if not matches:
            known = ", ".join(p.name for p in found)
            raise UnknownProgram(f"no program named {name!r}; the programs are: {known}")
        chosen += [p for p in matches if p not in chosen]
    return sorted(chosen, key=lambda p: (START_ORDER[p.kind], found.index(p)))


def render_template(template: str, values: dict[str, str]) -> str:
    text = (templates_dir() / template).read_text()
    try:
        return Template(text).substitute(values)
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"template {template} is broken ({exc!r}); reinstall salvus") from None


def rendered(data: DataDir, config: Config, service: Account | None) -> dict[Path, str]:
    """Every file salvusctl renders from the config, with its content."""
    found = plan(data, config, service)
    files = {data.supervisord_conf: render_template("supervisord.conf.in", {
        "data": str(data.root), "sock": str(data.supervisor_sock),
        "pidfile": str(data.supervisor_pid), "logs": str(data.logs),
        "programs": str(data.programs_dir), "instance": config.get("salvus", "instance"),
        **log_rotation(config),
        "password": access.supervisor_password(data) or "",
        "user_line": "user = root" if service is not None else
                     "; user: not set; supervisord runs as the admin who started it",
    })}
    # The frontends watch this file: workers added or removed take effect
    # without restarting them.
    bind = config.get("salvus", "bind")
    server_key = curve.load_public(data.worker_public_key).decode()
    workers = [{"name": p.name, "endpoint": f"tcp://{bind}:{p.ports[0]}",
                "publish": f"tcp://{bind}:{p.ports[1]}", "server_key": server_key}
               for p in found if p.kind == "worker"]
    files[data.workers_file] = json.dumps(workers, indent=2) + "\n"
    # The bus: each frontend subscribes to the others and to salvusctl message.
    web_public = curve.load_public(data.web_key).decode()
    frontends = [{"name": p.name, "bus": bus_endpoint(config, p.ports[1]), "key": web_public,
                  "http": web_url(config, p.ports[0])} for p in found if p.kind == "web"]
    # Read by web/bus.py (Directory): salvusctl and its registry listener do
    # not import the web package (a broken one must not take them down).
    files[data.frontends_file] = json.dumps({
        "frontends": frontends,
        "message": {"endpoint": bus_endpoint(config, config.get("web", "bus_port")),
                    "key": web_public}}, indent=2) + "\n"
    for program in found:
        files[data.programs_dir / f"{program.name}.conf"] = render_template(
            program.template, program.values)
        if program.kind == "haproxy":
            files[Path(program.values["cfg"])] = program.values["config"]
    return files


def out_of_date(data: DataDir, config: Config, service: Account | None) -> bool:
    """Whether the files on disk differ from what the config renders to now."""
    files = rendered(data, config, service)
    on_disk = set(data.programs_dir.glob("*.conf"))
    if on_disk != {p for p in files if p.parent == data.programs_dir}:
        return True
    return any(not path.exists() or path.read_text() != text for path, text in files.items())


def render_all(data: DataDir, config: Config, service: Account | None) -> list[Path]:
    """Write every rendered file (atomically: frontends may be reading the
    workers file) and remove the files of programs that are gone."""
    files = rendered(data, config, service)
    data.programs_dir.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        temporary = path.with_name(path.name + ".new")
        temporary.write_text(text)
        temporary.replace(path)
    for old in [*data.programs_dir.glob("*.conf"), *data.etc.glob("haproxy*.cfg")]:
        if old not in files:
            old.unlink()
    return list(files)
