"""``salvusctl backup`` and ``salvusctl restore``: the appliance's database in
one file, with PostgreSQL's own tools.

A backup is ``pg_dump -Fc`` of the appliance's database (the embedded
cluster, or the one of ``[database] dsn``), taken from one snapshot, so it is
consistent while the appliance serves. It holds every worksheet link, image
and session record, and the log table when the logs live in the same
database: the file is the admin's alone (mode 0600, in a 0700 folder).

The log database of ``[logs] dsn``, when it is another database, is not in the
backup, and ``backup`` says so each time: logs are history, not state; that
database is often shared by the logs of several appliances (a backup of one
appliance would copy all of theirs), and a restore of one appliance must not
rewind the others' logs. Back it up with its own tools if its lines matter.

A restore replaces everything in the database in one transaction: the
appliance's tables are dropped and the archive's recreated (``pg_restore
--clean --if-exists``, its script run by psql with ON_ERROR_STOP), and the
transaction commits only when pg_restore read the whole archive. So a
truncated or broken file changes nothing, and tables that a newer Salvus
added since the backup go too (the migrations that follow make them again).
Before touching anything, restore reads the archive's migration ledger and
refuses a backup of a newer Salvus, or one whose applied migrations differ
from this Salvus's files; after it, pending migrations bring an older backup
up to date.

The data folder's instance ([salvus] instance) is never changed by a restore:
two data folders on one host must not share it (their processes and session
uids are told apart by it). The rows of other instances that the backup
holds are left as they are, unless ``--adopt INSTANCE`` names the appliance
the backup came from: then its history (component_events, and its log lines
when the log table is in this database) becomes this folder's, and its rows
of live state (components, browsers, log_cursors: processes and files of the
old host) are removed. Either way the registry rows of this instance are
repaired from what supervisord says afterwards, as ``salvusctl check`` does.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg2
from psycopg2.extensions import make_dsn, parse_dsn

from salvusctl import leftovers, migrate, postgres, registry
from salvusctl.appliance import Appliance, port_in_use, service_account
from salvusctl.errors import DatabaseError, MigrationError, PortInUse, SalvusError
from salvusctl.resources import sql_dir

# What a custom-format archive starts with: "PGDMP", the archive version
# (3 bytes), int and offset sizes, then the format (1 = custom).
MAGIC = b"PGDMP"
CUSTOM_FORMAT = 1
FORMAT_OFFSET = 10
# pg_dump waits this long for a table that someone holds exclusively (a
# migration) before it gives up; restore waits as long for its own locks.
LOCK_WAIT = "60s"
RESTORE_LOCK_WAIT = "15s"
CONNECT_TIMEOUT = "10"
COPY_CHUNK = 1 << 20
DEFAULT_NAME = re.compile(r"^salvus-(?P<instance>[A-Za-z0-9_.-]+?)-(?P<at>\d{8}T\d{6}Z)"
                          r"(?:-(?P<n>\d+))?\.dump$")
# Programs that may run while a restore replaces the data: only the database.
MAY_RUN = {"postgres"}

# Drops every table, view and sequence of the schema public (but those of
# extensions), so the archive's tables replace them whatever a newer schema
# added. Run in the restore's transaction: a failed restore drops nothing.
DROP_ALL = f"""\
BEGIN;
SET lock_timeout = '{RESTORE_LOCK_WAIT}';
DO $salvus_restore$
DECLARE
    item record;
BEGIN
    FOR item IN
        SELECT format('DROP %s IF EXISTS %I.%I CASCADE',
                      CASE c.relkind WHEN 'v' THEN 'VIEW'
                                     WHEN 'm' THEN 'MATERIALIZED VIEW'
                                     WHEN 'S' THEN 'SEQUENCE'
                                     WHEN 'f' THEN 'FOREIGN TABLE'
                                     ELSE 'TABLE' END,
                      n.nspname, c.relname) AS statement
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
          AND NOT EXISTS (SELECT 1 FROM pg_depend d
                          WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                            AND d.deptype = 'e')
    LOOP
        EXECUTE item.statement;
    END LOOP;
END
$salvus_restore$;
"""


# ---------------------------------------------------------------- tools


@dataclass(frozen=True)
class Tools:
    """PostgreSQL's client programs of the version salvusctl runs the server with."""

    bindir: Path

    @classmethod
    def find(cls) -> Tools:
        bindir = postgres.find_bindir()
        for tool in ("pg_dump", "pg_restore", "psql"):
            if not (bindir / tool).exists():
                raise SalvusError(f"{bindir / tool} is missing; install PostgreSQL's client "
                                  "programs (`apt-get install postgresql-client`)")
        return cls(bindir)

    pg_dump = property(lambda self: str(self.bindir / "pg_dump"))
    pg_restore = property(lambda self: str(self.bindir / "pg_restore"))
    psql = property(lambda self: str(self.bindir / "psql"))


def connection(dsn: str) -> tuple[str, dict[str, str]]:
    """(conninfo, environment) for a libpq program: the password, if the DSN
    has one, goes through the environment, not the command line (which every
    user of the host may read in /proc)."""
    try:
        params = parse_dsn(dsn)
    except psycopg2.ProgrammingError as exc:
        raise DatabaseError(f"the database's connection string is invalid ({exc}); fix "
                            "[database] dsn in the config") from None
    env = {**os.environ, "PGCONNECT_TIMEOUT": CONNECT_TIMEOUT}
    password = params.pop("password", None)
    if password is not None:
        env["PGPASSWORD"] = password
    return make_dsn(**params), env


def _last_line(text: str | bytes, fallback: str) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else fallback


def _strip_tool(line: str) -> str:
    """'pg_dump: error: connection ... failed: x' -> 'connection ... failed: x'."""
    return re.sub(r"^(pg_dump|pg_restore|psql)(: error)?: ", "", line)


def human_size(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    for unit in ("KB", "MB", "GB"):
        size /= 1024
        if size < 1024 or unit == "GB":
            break
    return f"{size:.1f} {unit}"


def _require_database(app: Appliance, states: dict) -> None:
    if app.config.embedded_db and states.get("postgres", {}).get("statename") != "RUNNING":
        raise DatabaseError("the embedded database is not running; start it with "
                            "`salvusctl start postgres`")


# ---------------------------------------------------------------- backup


def default_folder(app: Appliance) -> Path:
    return app.data.root / "backups"


def _default_target(app: Appliance) -> Path:
    folder = default_folder(app)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"salvus-{app.instance}-{stamp}"
    target, n = folder / f"{name}.dump", 0
    while target.exists():  # two backups within one second
        n += 1
        target = folder / f"{name}-{n}.dump"
    return target


def _prepare_folder(folder: Path, default: bool) -> None:
    if default:
        try:
            folder.mkdir(mode=0o700, exist_ok=True)
            os.chmod(folder, 0o700)
        except OSError as exc:
            raise SalvusError(f"cannot make the backup folder {folder} ({exc.strerror}); "
                              "name a FILE elsewhere") from None
    elif not folder.is_dir():
        raise SalvusError(f"folder {folder} does not exist; create it or name another FILE")


def backup(app: Appliance, file: Path | None, force: bool = False,
           keep: int | None = None) -> Path:
    """Write the database to ``file`` (default: DATA/backups/salvus-<instance>-
    <UTC time>.dump) through a temporary file beside it, renamed when whole."""
    _require_database(app, app.states())
    tools = Tools.find()
    default = file is None
    target = _default_target(app) if default else Path(file).absolute()
    if target.is_dir():
        raise SalvusError(f"{target} is a folder; name a file to write the backup to")
    if target.exists() and not force:
        raise SalvusError(f"{target} exists; name another file, or add --force to replace it")
    _prepare_folder(target.parent, default)
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise SalvusError(f"cannot write in {target.parent} ({exc.strerror}); name a FILE in "
                          "a folder you may write to") from None
    started = time.monotonic()
    try:
        try:
            _dump(tools, app.dsn, fd, target)
        finally:
            os.close(fd)
        _check_archive(tools, partial)
        _place(partial, target, force)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise
    took = time.monotonic() - started
    app.say(f"wrote {target} ({human_size(target.stat().st_size)}) in {took:.1f} s")
    if app.config.get("logs", "dsn"):
        app.say("note: the log database ([logs] dsn) is not in this backup: logs are "
                "history, often shared by several appliances; back it up with its own "
                "tools if its lines matter")
    if keep is not None:
        prune(app, keep)
    return target


def _dump(tools: Tools, dsn: str, fd: int, target: Path) -> None:
    conninfo, env = connection(dsn)
    with tempfile.TemporaryFile() as errors:
        result = subprocess.run(
            [tools.pg_dump, "--format=custom", f"--lock-wait-timeout={LOCK_WAIT}",
             "--no-password", f"--dbname={conninfo}"],
            stdin=subprocess.DEVNULL, stdout=fd, stderr=errors, env=env, check=False)
        errors.seek(0)
        said = errors.read().decode(errors="replace")
    if result.returncode != 0:
        line = _strip_tool(_last_line(said, f"exit status {result.returncode}"))
        if "No space left" in said or "could not write" in said:
            raise SalvusError(f"the backup could not be written to {target.parent} ({line}); "
                              "free some space or name a FILE on another disk")
        raise DatabaseError(f"pg_dump failed: {line}")
    try:
        os.fsync(fd)
    except OSError as exc:
        raise SalvusError(f"the backup could not be written to {target.parent} "
                          f"({exc.strerror}); free some space or name a FILE on another "
                          "disk") from None


def _check_archive(tools: Tools, path: Path) -> None:
    """pg_restore reads back what pg_dump wrote: a backup nobody could read is none."""
    result = subprocess.run([tools.pg_restore, "--list", str(path)], capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
        raise SalvusError("the backup just written cannot be read back ("
                          f"{_strip_tool(_last_line(result.stderr, 'no detail'))}); "
                          "check the disk and run backup again")


def _place(partial: Path, target: Path, force: bool) -> None:
    if force:
        partial.replace(target)
    else:
        try:
            os.link(partial, target)  # fails if the name was taken meanwhile
        except FileExistsError:
            raise SalvusError(f"{target} exists; name another file, or add --force to "
                              "replace it") from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            if target.exists():
                raise SalvusError(f"{target} exists; name another file, or add --force "
                                  "to replace it") from None
            partial.replace(target)  # a file system without hard links
        else:
            partial.unlink()
    folder = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def backups_of(app: Appliance) -> list[Path]:
    """This instance's backups in the default folder, oldest first."""
    found = []
    folder = default_folder(app)
    if not folder.is_dir():
        return []
    for path in folder.iterdir():
        match = DEFAULT_NAME.match(path.name)
        if match and match["instance"] == app.instance and path.is_file():
            found.append(((match["at"], int(match["n"] or 0)), path))
    return [path for _, path in sorted(found)]


def prune(app: Appliance, keep: int) -> list[Path]:
    """Remove this instance's backups in the default folder beyond the newest ``keep``."""
    old = backups_of(app)[:-keep]
    for path in old:
        path.unlink()
        app.say(f"removed old backup {path}")
    return old


# ---------------------------------------------------------------- restore


def _unreadable(file: Path, said: str) -> SalvusError:
    return SalvusError(f"{file} cannot be read by pg_restore "
                       f"({_strip_tool(_last_line(said, 'no detail'))}); is it a whole "
                       "backup, made with this PostgreSQL version or an older one?")


def check_archive(tools: Tools, file: Path) -> str:
    """Refuse anything but a readable pg_dump custom archive of a Salvus
    database; return pg_restore's listing of it."""
    try:
        with open(file, "rb") as f:
            head = f.read(FORMAT_OFFSET + 1)
    except FileNotFoundError:
        raise SalvusError(f"{file} does not exist; name a file written by "
                          "`salvusctl backup`") from None
    except IsADirectoryError:
        raise SalvusError(f"{file} is a folder; name a file written by "
                          "`salvusctl backup`") from None
    except OSError as exc:
        raise SalvusError(f"cannot read {file} ({exc.strerror})") from None
    if not head.startswith(MAGIC) or len(head) <= FORMAT_OFFSET or \
            head[FORMAT_OFFSET] != CUSTOM_FORMAT:
        raise SalvusError(f"{file} is not a pg_dump custom archive; restore takes a file "
                          "written by `salvusctl backup` (or `pg_dump -Fc`)")
    result = subprocess.run([tools.pg_restore, "--list", str(file)], capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
        raise _unreadable(file, result.stderr)
    if not re.search(rf"^\d+; \d+ \d+ TABLE public {migrate.LEDGER}( |$)", result.stdout, re.M):
        raise SalvusError(f"{file} is a pg_dump archive but not of a Salvus database (it "
                          f"has no table {migrate.LEDGER})")
    return result.stdout


def archived_ledger(tools: Tools, file: Path, ledger: str) -> dict[int, tuple[str, str]]:
    """version -> (name, checksum) of the migrations the archive's ``ledger`` records."""
    result = subprocess.run(
        [tools.pg_restore, "--data-only", f"--table={ledger}", "--file=-", str(file)],
        capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise _unreadable(file, result.stderr)
    rows, inside = {}, False
    for line in result.stdout.splitlines():
        if line.startswith(f"COPY public.{ledger} "):
            inside = True
        elif inside and line == "\\.":
            break
        elif inside:
            version, name, checksum = line.split("\t")[:3]
            rows[int(version)] = (name, checksum)
    return rows


def _refuse_foreign_migrations(file: Path, archived: dict[int, tuple[str, str]],
                               folder: Path) -> None:
    """The archive must be at this Salvus's schema or older, its files unchanged."""
    ours = {m.version: m for m in migrate.discover(folder)}
    for version, (name, checksum) in sorted(archived.items()):
        mine = ours.get(version)
        if mine is None:
            raise MigrationError(
                f"{file} comes from a newer Salvus (its migration "
                f"{version:03d}_{name}.sql is not in this one); restore it with that "
                "version of Salvus or a newer one")
        if mine.checksum != checksum:
            raise MigrationError(
                f"{file} was migrated with another {mine.path.name} than this Salvus "
                "has; restore it with the Salvus that made it")


def _running_programs(app: Appliance) -> dict[str, dict]:
    """Programs other than the database that run (or start, or stop)."""
    return {name: info for name, info in app.states().items()
            if name not in MAY_RUN and info["statename"] in registry.LIVE_STATES}


def _refuse_while_serving(app: Appliance) -> bool:
    """Refuse while any program but the database runs; True when supervisord runs."""
    if not app.supervisor.reachable():
        left = leftovers.find(app.instance)
        if left:
            raise SalvusError(
                f"{len(left)} process(es) of this appliance run without their supervisord "
                f"(pids {', '.join(str(p) for p in sorted(left))}); end them with "
                "`salvusctl stop`, then restore")
        return False
    running = _running_programs(app)
    if running:
        kinds = []
        for name in running:
            kind = re.sub(r"\d+$", "", name)
            if kind not in kinds:
                kinds.append(kind)
        raise SalvusError(
            f"{', '.join(sorted(running))} still run and would serve or write the data "
            f"being replaced; stop them first: `salvusctl stop {' '.join(kinds)}`")
    return True


@contextlib.contextmanager
def _database_up(app: Appliance, supervised: bool):
    """The database, running for the restore: supervisord's postgres, or the
    embedded cluster started alone while nothing of the appliance runs."""
    if not app.config.embedded_db:
        yield
        return
    if supervised:
        _require_database(app, app.states())
        yield
        return
    port = app.config.get("database", "port")
    if port_in_use(app.config.get("salvus", "bind"), port):
        raise PortInUse(f"port {port} of the embedded database is in use by another "
                        f"program; stop it or change [database] port in "
                        f"{app.data.config_file}")
    app.say("starting the embedded database for the restore...")
    with postgres.temporary_server(app.data, app.config, service_account(app.config)):
        postgres.wait_ready(postgres.embedded_dsn(app.data, app.config, "postgres"))
        postgres.ensure_database(app.data, app.config)
        yield
    app.say("stopped the embedded database again")


def restore(app: Appliance, file: Path, yes: bool = False, adopt: str | None = None,
            ask: Callable[[str], bool] | None = None) -> None:
    """Replace the database's data with the archive ``file`` (see the module's
    docstring); ``ask`` confirms when ``yes`` is not given (None: refuse)."""
    file = Path(file).absolute()
    tools = Tools.find()
    listing = check_archive(tools, file)
    logs_here = not app.config.get("logs", "dsn")
    _refuse_foreign_migrations(file, archived_ledger(tools, file, migrate.LEDGER), sql_dir())
    if logs_here:
        _refuse_foreign_migrations(file, archived_ledger(tools, file, migrate.LOG_LEDGER),
                                   sql_dir() / "logs")
    if adopt is not None and adopt == app.instance:
        raise SalvusError(f"{adopt} is this data folder's own instance; --adopt names the "
                          "instance of the appliance the backup came from")
    supervised = _refuse_while_serving(app)
    made = re.search(r"^; Archive created at (.+)$", listing, re.M)
    what = f"the backup {file}" + (f" of {made[1].strip()}" if made else "")
    if not yes:
        question = (f"Replace all data of the database of {app.data.root} (instance "
                    f"{app.instance}) with {what}?")
        if ask is None:
            raise SalvusError("restore replaces all data of the appliance's database; run "
                              "it again with --yes to go ahead")
        if not ask(question):
            raise SalvusError("nothing restored (not confirmed)")
    with _database_up(app, supervised):
        started = time.monotonic()
        _replace(tools, app.dsn, file)
        app.say(f"restored {what} in {time.monotonic() - started:.1f} s")
        _run_migrations(app, logs_here)
        conn = postgres.connect(app.dsn)
        try:
            _settle_instances(app, conn, adopt, logs_here)
        finally:
            conn.close()


def _replace(tools: Tools, dsn: str, file: Path) -> None:
    """pg_restore's script of the archive, run by psql in one transaction after
    DROP_ALL, committed only when pg_restore read all of the archive."""
    conninfo, env = connection(dsn)
    with tempfile.TemporaryFile() as restore_errors, tempfile.TemporaryFile() as psql_errors:
        psql = subprocess.Popen(
            [tools.psql, "--no-psqlrc", "--quiet", "--no-password", "--set=ON_ERROR_STOP=1",
             f"--dbname={conninfo}"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=psql_errors, env=env)
        reader = subprocess.Popen(
            [tools.pg_restore, "--clean", "--if-exists", "--no-owner", "--no-acl",
             "--file=-", str(file)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=restore_errors)
        read_all = psql_stopped = False
        try:
            psql.stdin.write(DROP_ALL.encode())
            shutil.copyfileobj(reader.stdout, psql.stdin, COPY_CHUNK)
            read_all = reader.wait() == 0
            if read_all:
                psql.stdin.write(b"\nCOMMIT;\n")
        except BrokenPipeError:
            psql_stopped = True  # at an error, which it names below
        finally:
            reader.stdout.close()
            if reader.poll() is None:
                reader.kill()
            reader.wait()
            with contextlib.suppress(BrokenPipeError):
                psql.stdin.close()  # without COMMIT the transaction is rolled back
            psql.wait()
        if read_all and not psql_stopped and psql.returncode == 0:
            return
        restore_errors.seek(0)
        psql_errors.seek(0)
        said_psql = psql_errors.read().decode(errors="replace")
        said_restore = restore_errors.read().decode(errors="replace")
    if not read_all and not psql_stopped:
        raise SalvusError(f"{file} could not be read to the end "
                          f"({_strip_tool(_last_line(said_restore, 'no detail'))}); the "
                          "database was not changed")
    line = _strip_tool(_last_line(said_psql, f"psql exit status {psql.returncode}"))
    if "lock timeout" in said_psql:
        raise DatabaseError("another connection to the database holds a table the restore "
                            "must replace (see pg_stat_activity); close it and run restore "
                            "again; the database was not changed")
    if "connection to server" in said_psql or "could not connect" in said_psql:
        raise DatabaseError(f"cannot connect to the database ({line}); check that it runs "
                            "(`salvusctl status postgres`) and [database] in the config")
    raise DatabaseError(f"the restore failed and was rolled back: {line}")


def _run_migrations(app: Appliance, logs_here: bool) -> None:
    """`salvusctl db migrate` on the restored data: an older backup is brought
    up to date (the log series too when the log table lives here)."""
    series = [(sql_dir(), migrate.LEDGER)]
    if logs_here:
        series.append((sql_dir() / "logs", migrate.LOG_LEDGER))
    conn = postgres.connect(app.dsn)
    try:
        for folder, ledger in series:
            try:
                migrate.migrate(conn, folder, app.say, ledger=ledger)
            except MigrationError as exc:
                raise MigrationError(f"the backup was restored, but {exc.message}") from None
    finally:
        conn.close()


def instances(conn) -> list[str]:
    """The instances the registry tables name, in order."""
    with conn.cursor() as cur:
        cur.execute("SELECT instance FROM components UNION"
                    " SELECT DISTINCT instance FROM component_events ORDER BY 1")
        return [row[0] for row in cur.fetchall()]


def _settle_instances(app: Appliance, conn, adopt: str | None, logs_here: bool) -> None:
    found = instances(conn)
    others = [name for name in found if name != app.instance]
    if adopt is not None:
        if adopt not in found:
            raise SalvusError(
                f"the backup was restored, but it holds no rows of instance {adopt} (it has: "
                f"{', '.join(found) or 'none'}); nothing adopted")
        adopted = _adopt(conn, adopt, app.instance, logs_here)
        app.say(f"adopted instance {adopt}: " + ", ".join(
            f"{n} {what}" for what, n in adopted.items()))
    elif others:
        app.say(f"note: the backup also holds rows of instance(s) {', '.join(others)} "
                f"(this data folder is {app.instance}); they are left as they are. If the "
                "backup came from that appliance, `salvusctl restore FILE --adopt "
                f"{others[0]}` makes its history this folder's")
    states = app.states()
    actual = {program.name: states.get(program.name, {"statename": "STOPPED", "pid": 0})
              for program in app.programs}
    host = app.config.get("salvus", "host")
    repairs = registry.check(conn, app.instance, host, actual) + \
        registry.check_browsers(conn, app.instance, host, actual)
    if repairs:
        app.say(f"the registry now says what runs ({len(repairs)} row(s) repaired)")


def _adopt(conn, old: str, new: str, logs_here: bool) -> dict[str, int]:
    """``old``'s history becomes ``new``'s; its rows of live state go. One transaction."""
    counts = {}
    statements = [
        ("history events moved", "UPDATE component_events SET instance = %s"
                                 " WHERE instance = %s", (new, old)),
        ("component rows removed", "DELETE FROM components WHERE instance = %s", (old,)),
        ("browser rows removed", "DELETE FROM browsers WHERE instance = %s", (old,)),
    ]
    if logs_here:
        statements += [
            ("log lines moved", "UPDATE log SET instance = %s WHERE instance = %s", (new, old)),
            ("log cursors removed", "DELETE FROM log_cursors WHERE instance = %s", (old,)),
        ]
    with conn, conn.cursor() as cur:
        for what, sql, params in statements:
            cur.execute(sql, params)
            counts[what] = cur.rowcount
    return counts


def ask_on_terminal(question: str) -> bool:
    """An interactive yes/no (only when stdin is a terminal)."""
    import click

    return click.confirm(question, default=False, err=True)


def confirmation() -> Callable[[str], bool] | None:
    return ask_on_terminal if sys.stdin.isatty() else None
