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
from salvusctl import access, postgres, topology, uids
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
    host: str = ""  # which of the config's hosts runs it (salvusctl/topology.py)

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
    """Every program this data folder runs (this host's share), in start order."""
    return [p for p in everywhere(data, config, service) if p.host == config.topology.this]


def everywhere(data: DataDir, config: Config, service: Account | None) -> list[Program]:
    """Every program of the appliance, on every host, in start order per host."""
    found: list[Program] = []
    for host in config.topology.hosts:
        found += _share(data, topology.as_host(config, host), service)
    if config.get("haproxy", "enabled") == "yes":
        frontends = [p for p in found if p.kind == "web"]
        for host in config.topology.hosts:
            found += haproxies(data, topology.as_host(config, host), service, frontends)
    for host in config.topology.hosts:
        # salvusctl message binds this port while it sends: no program may take it.
        extra = [Program("salvusctl message", "", {}, (config.get("web", "bus_port"),))] \
            if host == _message_host(config) else []
        _check_ports_distinct([*[p for p in found if p.host == host], *extra])
    return found


def _common(data: DataDir, config: Config) -> dict[str, str]:
    """What every program file of one host is rendered with."""
    return {
        "data": str(data.root),
        "logs": str(data.logs),
        "python": sys.executable,
        "bind": config.get("salvus", "bind"),
        "instance": config.get("salvus", "instance"),
        "host": config.get("salvus", "host"),
        "dsn_file": str(data.dsn_file),
        **log_rotation(config),
    }


def _share(data: DataDir, config: Config, service: Account | None) -> list[Program]:
    """The programs of ``config.topology.this``, but its haproxies."""
    common = _common(data, config)
    host = config.topology.this
    found: list[Program] = []
    if config.topology.runs_database():
        args = shlex.join(postgres.server_args(data, config))
        found.append(Program("postgres", "postgres.conf.in", {
            **common, "name": "postgres",
            "command": _supervisor_value(f"{postgres.find_bindir() / 'postgres'} {args}"),
            "user_line": _user_line(service), "cluster": str(data.cluster(config)),
        }, (config.get("database", "port"),), host))
    memcached = None
    launcher = _launcher(data, service)
    if config.get("memcached", "enabled") == "yes" and config.topology.runs_frontends():
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
        }, (), host))
    found.append(Program("registry", "registry.conf.in", {
        **common, "name": "registry", "spool": str(data.registry_spool),
        "buffer": str(config.get("registry", "buffer")), "launcher": launcher,
    }, (), host))
    found.append(Program("shipper", "shipper.conf.in", {
        **common, "name": "shipper", "launcher": launcher,
        "log_dsn_file": str(data.log_dsn_file),
        "keep_days": str(config.get("logs", "keep_days")),
    }, (), host))
    bind = config.get("salvus", "bind")
    for i in config.topology.indices("worker"):
        port = config.get("worker", "port") + i
        publish = config.get("worker", "publish_port") + i
        options = [*worker_options(data, config, i),
                   "--publish", f"tcp://{bracketed(bind)}:{publish}"]
        found.append(Program(f"worker{i}", "worker.conf.in", {
            **common, "name": f"worker{i}", "index": str(i), "port": str(port),
            "options": _supervisor_value(shlex.join(options)),
            "endpoint": f"tcp://{bracketed(bind)}:{port}",
            "publish": f"tcp://{bracketed(bind)}:{publish}",
        }, (port, publish), host))
    for i in config.topology.indices("web"):
        port = config.get("web", "port") + i
        bus = bus_port(config, i)
        options = [
            *web_options(data, config, memcached),
            "--frontends-file", str(data.frontends_file),
            "--bus-bind", f"tcp://{bracketed(bind)}:{bus}",
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
            "http": web_url(config, port), "bus": bus_endpoint(config, bus),
            "backend": _host_port(_local(bind), port),
        }, (port, bus), host))
    return found


def _local(address: str) -> str:
    """Where a program listening on ``address`` is reached (every address:
    loopback)."""
    return "127.0.0.1" if address in ("0.0.0.0", "::") else address


def _message_host(config: Config) -> str:
    """Where `salvusctl message` binds: the first host with frontends."""
    return config.topology.placement["web"][0]


def haproxies(data: DataDir, config: Config, service: Account | None,
              frontends: list[Program]) -> list[Program]:
    """This host's haproxies, in front of every frontend: each with its config
    file's text in ``values["config"]``."""
    common = _common(data, config)
    bind = haproxy_bind(config)
    servers = "\n".join(f"    server {p.name} {p.values['backend']} check" for p in frontends)
    user = (f"    user {service.name}\n    group {service.name}" if service is not None
            else "    # (not root: haproxy runs as the admin who started supervisord)")
    certificate = config.get("haproxy", "certificate")
    found = []
    for i in config.topology.indices("haproxy"):
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
        }, (http, https), config.topology.this))
    return found


def haproxy_bind(config: Config) -> str:
    """haproxy's listening address: [haproxy] bind on one host; its host's
    address on several."""
    if config.topology.several:
        return config.get("salvus", "bind")
    return config.get("haproxy", "bind") or config.get("salvus", "bind")


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
    top = config.topology
    if top.several:
        return [top.hosts[host] for host in top.placement["haproxy"]]
    backend = config.get("salvus", "bind")
    return ["127.0.0.1", "::1"] if backend in ("127.0.0.1", "0.0.0.0", "::", "::1") \
        else [backend]


def public_host(config: Config, host: str | None = None) -> str:
    """The name browsers use for the haproxies of ``host`` (this one by
    default), which their certificate carries."""
    chosen = config.get("haproxy", "public_name")
    if chosen:
        return chosen
    if host is not None and host != config.topology.this:
        return config.topology.hosts[host]
    bind = haproxy_bind(config)
    return socket.gethostname() if bind in ("0.0.0.0", "::") else bind


def public_hosts(config: Config) -> list[str]:
    """The names of every host's haproxies, for the certificate they share."""
    return list(dict.fromkeys(public_host(config, host)
                              for host in config.topology.placement["haproxy"]))


def haproxy_urls(config: Config) -> list[str]:
    """The https URLs of every haproxy, haproxy0's first."""
    urls = []
    for i in range(config.topology.total("haproxy")):
        name = public_host(config, config.topology.host_of("haproxy", i))
        port = config.get("haproxy", "https_port") + i
        urls.append(f"https://{bracketed(name)}{'' if port == 443 else f':{port}'}/")
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


PRESETS = ("google", "github", "dropbox", "facebook")


def providers(config: Config) -> list[dict]:
    """The sign-in providers of [accounts], as the frontends read them
    (web/providers.py): in a file, since they hold client secrets."""
    found = []
    for name in PRESETS:
        client_id = config.get("accounts", f"{name}_client_id")
        if client_id:
            found.append({"name": name, "client_id": client_id,
                          "client_secret": config.get("accounts", f"{name}_client_secret")})
    if config.get("accounts", "oidc_discovery_url"):
        found.append({"name": "oidc", "title": config.get("accounts", "oidc_title") or "OpenID",
                      "discovery_url": config.get("accounts", "oidc_discovery_url"),
                      "client_id": config.get("accounts", "oidc_client_id"),
                      "client_secret": config.get("accounts", "oidc_client_secret")})
    return found


def web_options(data: DataDir, config: Config, memcached: str | None) -> list[str]:
    """A frontend's command-line settings, all taken from the config."""
    options = ["--curve-key", str(data.web_key), "--providers-file", str(data.providers_file),
               "--secret-file", str(data.web_secret)]
    if config.get("accounts", "anonymous") == "no":
        options.append("--no-anonymous")
    options += ["--anonymous-sessions", str(config.get("accounts", "anonymous_sessions"))]
    for flag, key in (("starts", "session_starts"), ("executions", "executions"),
                      ("address-starts", "address_session_starts"),
                      ("address-executions", "address_executions"),
                      ("anonymous-starts", "anonymous_session_starts"),
                      ("anonymous-executions", "anonymous_executions")):
        options += [f"--rate-{flag}", config.get("accounts", key)]
    if config.get("haproxy", "enabled") == "yes":
        options.append("--secure-cookies")  # browsers come in over https only
    if memcached:
        options += ["--memcached", memcached]
    for name in WEB_OPTIONS:
        value = str(config.get("web", name))
        if name == "server_names" and config.get("haproxy", "enabled") == "yes":
            # The names browsers reach the haproxies by come in the Host header.
            value = " ".join(dict.fromkeys(filter(None, [*value.split(),
                                                         *public_hosts(config)])))
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
        "host": config.get("salvus", "host"),
        **log_rotation(config),
        "password": access.supervisor_password(data) or "",
        "user_line": "user = root" if service is not None else
                     "; user: not set; supervisord runs as the admin who started it",
    })}
    # The frontends watch this file: workers added or removed take effect
    # without restarting them. It lists every host's workers.
    every = everywhere(data, config, service)
    server_key = curve.load_public(data.worker_public_key).decode()
    workers = [{"name": p.name, "endpoint": p.values["endpoint"],
                "publish": p.values["publish"], "server_key": server_key}
               for p in every if p.kind == "worker"]
    files[data.workers_file] = json.dumps(workers, indent=2) + "\n"
    # The bus: each frontend subscribes to the others and to salvusctl message.
    web_public = curve.load_public(data.web_key).decode()
    frontends = [{"name": p.name, "bus": p.values["bus"], "key": web_public,
                  "http": p.values["http"]} for p in every if p.kind == "web"]
    files[data.providers_file] = json.dumps(providers(config), indent=2) + "\n"
    message = topology.as_host(config, _message_host(config))
    # Read by web/bus.py (Directory): salvusctl and its registry listener do
    # not import the web package (a broken one must not take them down).
    files[data.frontends_file] = json.dumps({
        "frontends": frontends,
        "message": {"endpoint": bus_endpoint(message, config.get("web", "bus_port")),
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
