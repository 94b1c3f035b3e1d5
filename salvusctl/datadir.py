"""Where everything lives inside one data folder.

    DATA/
      salvus.conf            the config (single source of truth)
      etc/supervisord.conf   rendered main supervisord config
      etc/supervisord.d/     one rendered program file per component
      etc/workers.json       the workers the frontends use (watched by them)
      run/                   supervisord's socket and pid file
      var/                   what the service user's programs write (registry spool)
      logs/                  supervisord's and every program's log
      secrets/               database password file, DSNs, web secret key,
      secrets/curve/         CURVE keys of workers and frontends, allowed clients
      sessions/              where each session's own files are mounted
      pg/                    the embedded PostgreSQL cluster (data/, run/)

Who may read what is in salvusctl/access.py.
"""

from __future__ import annotations

import os
from pathlib import Path

from salvusctl import config as configfile
from salvusctl import topology
from salvusctl.errors import ConfigError, NotInitialized

# sun_path in struct sockaddr_un holds 108 bytes including the final NUL.
UNIX_PATH_MAX = 107


def default_path() -> Path:
    return Path(os.environ.get("SALVUS_DATA") or "salvus-data")


class DataDir:
    def __init__(self, path: Path | str):
        self.root = Path(path).absolute()

    config_file = property(lambda self: self.root / "salvus.conf")
    etc = property(lambda self: self.root / "etc")
    supervisord_conf = property(lambda self: self.etc / "supervisord.conf")
    programs_dir = property(lambda self: self.etc / "supervisord.d")
    run = property(lambda self: self.root / "run")
    supervisor_sock = property(lambda self: self.run / "supervisor.sock")
    supervisor_pid = property(lambda self: self.run / "supervisord.pid")
    var = property(lambda self: self.root / "var")
    registry_spool = property(lambda self: self.var / "registry.spool")
    memcached_socket = property(lambda self: self.var / "memcached.sock")
    logs = property(lambda self: self.root / "logs")
    secrets = property(lambda self: self.root / "secrets")
    pgpass = property(lambda self: self.secrets / "pgpass")
    dsn_file = property(lambda self: self.secrets / "dsn")
    log_dsn_file = property(lambda self: self.secrets / "log_dsn")
    web_secret = property(lambda self: self.secrets / "web_secret_key")
    providers_file = property(lambda self: self.secrets / "providers.json")
    supervisor_secret = property(lambda self: self.secrets / "supervisor_password")
    tls_pem = property(lambda self: self.secrets / "tls.pem")
    curve = property(lambda self: self.secrets / "curve")
    worker_key = property(lambda self: self.curve / "worker.key_secret")
    worker_public_key = property(lambda self: self.curve / "worker.key")
    web_key = property(lambda self: self.curve / "web.key_secret")
    allowed_clients = property(lambda self: self.curve / "clients")
    workers_file = property(lambda self: self.etc / "workers.json")
    frontends_file = property(lambda self: self.etc / "frontends.json")
    host_file = property(lambda self: self.root / "host")

    def cluster(self, config: configfile.Config) -> Path:
        chosen = config.get("database", "cluster")
        return Path(chosen) if chosen else self.root / "pg"

    def pg_data(self, config: configfile.Config) -> Path:
        return self.cluster(config) / "data"

    def pg_run(self, config: configfile.Config) -> Path:
        return self.cluster(config) / "run"

    def sessions(self, config: configfile.Config) -> Path:
        chosen = config.get("worker", "sessions_dir")
        return Path(chosen) if chosen else self.root / "sessions"

    def exists(self) -> bool:
        return self.config_file.exists()

    def host(self) -> str | None:
        """Which of the config's hosts this folder is on (init --host), if told."""
        try:
            return self.host_file.read_text().strip() or None
        except FileNotFoundError:
            return None

    def load_config(self) -> configfile.Config:
        """The config as this folder's host runs it (salvusctl/topology.py)."""
        try:
            config = configfile.load(self.config_file)
        except FileNotFoundError:
            raise NotInitialized(
                f"{self.root} is not an initialized data folder; "
                f"run `salvusctl init --data {self.root}` first"
            ) from None
        return topology.on_host(config, self.host())

    def check_socket_paths(self, config: configfile.Config) -> None:
        """Unix socket paths have a hard length limit; fail early and clearly."""
        sockets = [self.supervisor_sock]
        if config.embedded_db:
            sockets.append(self.pg_run(config) / f".s.PGSQL.{config.get('database', 'port')}")
        for sock in sockets:
            if len(str(sock).encode()) > UNIX_PATH_MAX:
                raise ConfigError(
                    f"socket path {sock} is longer than {UNIX_PATH_MAX} bytes; "
                    "use a data folder with a shorter path"
                )
