"""The embedded PostgreSQL cluster: find the binaries, initdb, run, connect.

PostgreSQL refuses to run as root, so when salvusctl is root every server
command runs as the service user (``Account``); supervisord does the same
switch with the program's ``user=`` key.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import psycopg2

from salvusctl import tls
from salvusctl.accounts import Account
from salvusctl.config import Config
from salvusctl.datadir import DataDir
from salvusctl.errors import DatabaseError, PostgresMissing

DB_NAME = "salvus"
DB_USER = "salvus"


def find_bindir() -> Path:
    """The folder holding initdb, pg_ctl and postgres (newest Debian version first)."""
    def version(folder: str) -> tuple[int, ...]:
        part = Path(folder).parent.name
        return tuple(int(p) for p in part.split(".") if p.isdigit())

    if os.environ.get("SALVUS_PG_BINDIR"):
        # An explicit choice is the only candidate: no silent fallback.
        candidates = [os.environ["SALVUS_PG_BINDIR"]]
    else:
        candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
        on_path = shutil.which("initdb")
        if on_path:
            candidates.append(str(Path(on_path).resolve().parent))
    for folder in candidates:
        if all((Path(folder) / tool).exists() for tool in ("initdb", "pg_ctl", "postgres")):
            return Path(folder)
    raise PostgresMissing(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found; "
        "install them with `apt-get install postgresql` or set SALVUS_PG_BINDIR"
    )


def server_args(data: DataDir, config: Config) -> list[str]:
    """postgres's settings, given on its command line so the config file rules."""
    args = [
        "-D", str(data.pg_data(config)),
        "-c", f"listen_addresses={config.get('salvus', 'bind')}",
        "-c", f"port={config.get('database', 'port')}",
        "-c", f"unix_socket_directories={data.pg_run(config)}",
        "-c", "unix_socket_permissions=0700",
        "-c", "logging_collector=off",
        "-c", "log_timezone=UTC",
        "-c", "log_line_prefix=%m [%p] ",
    ]
    if config.topology.several:
        # Other hosts come over the network: TLS (see allow_other_hosts).
        cert, key = tls_files(data, config)
        args += ["-c", "ssl=on", "-c", f"ssl_cert_file={cert}", "-c", f"ssl_key_file={key}",
                 "-c", "ssl_min_protocol_version=TLSv1.2"]
    return args


def tls_files(data: DataDir, config: Config) -> tuple[Path, Path]:
    folder = data.cluster(config) / "tls"
    return folder / "server.crt", folder / "server.key"


# pg_hba.conf lines that let the other hosts in: TLS and the password only.
OTHER_HOSTS = ("# salvus: the appliance's other hosts ([salvus] hosts), TLS only\n"
               f"hostssl {DB_NAME},postgres {DB_USER} 0.0.0.0/0 scram-sha-256\n"
               f"hostssl {DB_NAME},postgres {DB_USER} ::/0 scram-sha-256\n")


def allow_other_hosts(data: DataDir, config: Config, account: Account | None) -> bool:
    """With several hosts: the cluster's certificate (self-signed: it
    encrypts; the password, over scram, authenticates) and the pg_hba.conf
    lines for other hosts. Whether anything changed."""
    if not config.topology.several:
        return False
    changed = False
    cert, key = tls_files(data, config)
    if not (cert.exists() and key.exists()):
        cert.parent.mkdir(mode=0o700, exist_ok=True)
        tls.make_self_signed(cert, "salvus-database", (config.get("salvus", "bind"),),
                             key_path=key)
        changed = True
    hba = data.pg_data(config) / "pg_hba.conf"
    if OTHER_HOSTS not in hba.read_text():
        with hba.open("a") as f:
            f.write("\n" + OTHER_HOSTS)
        changed = True
    if account is not None:
        for path in (cert.parent, cert, key, hba):
            os.chown(path, account.uid, account.gid)
    return changed


def embedded_dsn(data: DataDir, config: Config, dbname: str = DB_NAME) -> str:
    top = config.topology
    if top.several and not top.runs_database():
        # On another host: over the network, with TLS.
        return (f"host={top.hosts[top.database]} port={config.get('database', 'port')} "
                f"dbname={dbname} user={DB_USER} passfile={data.pgpass} sslmode=require")
    return (
        f"host={data.pg_run(config)} port={config.get('database', 'port')} "
        f"dbname={dbname} user={DB_USER} passfile={data.pgpass}"
    )


def ensure_password(data: DataDir) -> str:
    """The database password: the one every host's copy of secrets/ holds, or
    a new one (the first init)."""
    if data.pgpass.exists():
        return data.pgpass.read_text().strip().rsplit(":", 1)[1]
    password = secrets.token_urlsafe(24)
    data.pgpass.write_text(f"*:*:*:{DB_USER}:{password}\n")
    os.chmod(data.pgpass, 0o600)
    return password


def _run_as(account: Account | None, argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    ids = {} if account is None else {"user": account.uid, "group": account.gid,
                                      "extra_groups": []}
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False, **ids)


def _fail(what: str, result: subprocess.CompletedProcess) -> DatabaseError:
    lines = (result.stderr or result.stdout).strip().splitlines()
    detail = lines[-1] if lines else f"exit status {result.returncode}"
    return DatabaseError(f"{what} failed: {detail}")


def initdb(data: DataDir, config: Config, account: Account | None) -> None:
    """Create the cluster with password auth only (no trust, no peer)."""
    bindir = find_bindir()
    cluster = data.cluster(config)
    password = ensure_password(data)
    pwfile = cluster / ".initdb-password"
    pwfile.write_text(password + "\n")
    os.chmod(pwfile, 0o600)
    if account is not None:
        os.chown(pwfile, account.uid, account.gid)
    try:
        result = _run_as(account, [
            str(bindir / "initdb"), "-D", str(data.pg_data(config)), "-U", DB_USER,
            "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8", "--no-locale",
            "--no-instructions",
        ], cwd=cluster)
    finally:
        pwfile.unlink()
    if result.returncode != 0:
        raise _fail("initdb", result)


@contextmanager
def temporary_server(data: DataDir, config: Config, account: Account | None):
    """Run the cluster outside supervisord (used by init before supervisord exists)."""
    bindir = find_bindir()
    pg_data = data.pg_data(config)
    log = data.cluster(config) / "init-server.log"
    options = " ".join(f"'{a}'" if " " in a else a for a in server_args(data, config)[2:])
    result = _run_as(account, [
        str(bindir / "pg_ctl"), "-D", str(pg_data), "-w", "-t", "60", "-l", str(log),
        "-o", options, "start",
    ], cwd=data.cluster(config))
    if result.returncode != 0:
        tail = log.read_text().strip().splitlines()[-1:] if log.exists() else []
        raise DatabaseError(
            "could not start the embedded PostgreSQL for init: "
            + (tail[0] if tail else result.stderr.strip())
        )
    try:
        yield
    finally:
        _run_as(account, [str(bindir / "pg_ctl"), "-D", str(pg_data), "-m", "fast", "-w",
                          "stop"], cwd=data.cluster(config))


def connect(dsn: str, timeout: float = 5):
    try:
        return psycopg2.connect(dsn, connect_timeout=max(1, int(timeout)))
    except psycopg2.OperationalError as exc:
        first = (str(exc).strip().splitlines() or ["no detail"])[0]
        raise DatabaseError(
            f"cannot connect to the database ({first}); "
            "check that it runs (`salvusctl status postgres`) and [database] in the config"
        ) from None


def wait_ready(dsn: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            connect(dsn, timeout=2).close()
            return
        except DatabaseError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def ensure_database(data: DataDir, config: Config) -> bool:
    """Create the ``salvus`` database in the embedded cluster if it is missing."""
    conn = connect(embedded_dsn(data, config, dbname="postgres"))
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,))
            if cur.fetchone():
                return False
            cur.execute(f"CREATE DATABASE {DB_NAME}")
            return True
    finally:
        conn.close()


def program_dsn(data: DataDir, config: Config) -> str:
    """The DSN the programs read from the data folder's dsn file. libpq ignores
    a password file that its group may read, and the programs run as the
    service user while salvusctl is root: so the embedded cluster's password
    is in this string itself (the file is readable by the service user only)."""
    if not config.embedded_db:
        return config.get("database", "dsn")
    password = data.pgpass.read_text().strip().rsplit(":", 1)[1]
    return embedded_dsn(data, config).replace(f"passfile={data.pgpass}",
                                              f"password={password}")


def dsn(data: DataDir, config: Config) -> str:
    return embedded_dsn(data, config) if config.embedded_db else config.get("database", "dsn")


def log_program_dsn(data: DataDir, config: Config) -> str:
    """The DSN of the log database, as the shipper reads it (see program_dsn)."""
    return config.get("logs", "dsn") or program_dsn(data, config)


def log_dsn(data: DataDir, config: Config) -> str:
    """The DSN of the log database, as salvusctl uses it."""
    return config.get("logs", "dsn") or dsn(data, config)
