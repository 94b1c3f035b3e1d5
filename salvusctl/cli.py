"""``salvusctl``: init, start, stop, restart, status, check, message, logs, backup,
restore, install-service, db migrate.

State travels in a ``Context`` object (click's ``obj``); errors are
``SalvusError`` subclasses, which click's ``Command.main`` prints as one
``Error: ...`` line with the error's exit code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import click

from salvusctl import __version__, logview
from salvusctl.appliance import Appliance
from salvusctl.appliance import init as init_data
from salvusctl.datadir import default_path
from salvusctl.errors import ProgramFailed

NOT_RUNNING_EXIT = 3


@dataclass
class Context:
    data: Path

    def appliance(self) -> Appliance:
        return Appliance(self.data, click.echo)


pass_context = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=default_path,
              show_default="$SALVUS_DATA, else ./salvus-data",
              help="The data folder (config, database cluster, logs).")
@click.version_option(__version__, prog_name="salvusctl")
@click.pass_context
def cli(ctx: click.Context, data: Path) -> None:
    """Run a Salvus appliance: math in the browser, served from this host."""
    ctx.obj = Context(data)


@cli.command()
@click.option("--force", is_flag=True,
              help="Re-render the supervisord files from the config (database untouched).")
@click.option("--base-port", type=click.IntRange(1, 65000),
              help="Web port; workers use it +100, the database +200, memcached +300, "
                   "the frontends' bus +400, workers' publishers +500, haproxy's http "
                   "+600 and https +700.")
@click.option("--web", "web_count", type=click.IntRange(1, 64), help="Number of web frontends.")
@click.option("--workers", type=click.IntRange(1, 256), help="Number of compute workers.")
@click.option("--dsn", help="Use this PostgreSQL database instead of an embedded cluster.")
@click.option("--haproxy", "haproxies", type=click.IntRange(1, 8),
              help="Put N haproxy instances (HTTPS, a self-signed certificate unless the "
                   "config names one) in front of the frontends.")
@click.option("--set", "settings", multiple=True, metavar="SECTION.KEY=VALUE",
              callback=lambda ctx, param, value: _settings(value),
              help="Any config key, e.g. --set 'salvus.hosts=a=10.0.0.1 b=10.0.0.2' "
                   "(repeatable; applied after the other options).")
@click.option("--host", metavar="NAME",
              help="With [salvus] hosts: which host this data folder is on. In a copy of "
                   "the first host's salvus.conf and secrets/, makes that host's share.")
@pass_context
def init(obj: Context, force: bool, base_port: int | None, web_count: int | None,
         workers: int | None, dsn: str | None, haproxies: int | None,
         settings: dict, host: str | None) -> None:
    """Create the data folder: config, database cluster, supervisord files."""
    overrides = {}
    if base_port is not None:
        overrides[("web", "port")] = base_port
        overrides[("worker", "port")] = base_port + 100
        overrides[("database", "port")] = base_port + 200
        overrides[("memcached", "port")] = base_port + 300
        overrides[("web", "bus_port")] = base_port + 400
        overrides[("worker", "publish_port")] = base_port + 500
        overrides[("haproxy", "http_port")] = base_port + 600
        overrides[("haproxy", "https_port")] = base_port + 700
    if web_count is not None:
        overrides[("web", "count")] = web_count
    if workers is not None:
        overrides[("worker", "count")] = workers
    if dsn is not None:
        overrides[("database", "dsn")] = dsn
    if haproxies is not None:
        overrides[("haproxy", "enabled")] = "yes"
        overrides[("haproxy", "count")] = haproxies
    overrides.update(settings)
    init_data(obj.data, overrides, force, click.echo, host=host)


def _settings(given: tuple[str, ...]) -> dict[tuple[str, str], str]:
    """``--set section.key=value`` options as config overrides."""
    found = {}
    for item in given:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not section or not name:
            raise click.BadParameter(f"{item!r} is not SECTION.KEY=VALUE "
                                     "(e.g. web.count=2)", param_hint="--set")
        found[(section, name)] = value.strip()
    return found


HOST_OPTION = click.option("--host", metavar="NAME",
                           help="The host this data folder must be (with [salvus] hosts).")


@cli.command()
@click.argument("names", nargs=-1)
@HOST_OPTION
@pass_context
def start(obj: Context, names: tuple[str, ...], host: str | None) -> None:
    """Start supervisord and the named programs (all of this host's by default)."""
    appliance = obj.appliance()
    appliance.check_host(host)
    appliance.start(names)


@cli.command()
@click.argument("names", nargs=-1)
@HOST_OPTION
@pass_context
def stop(obj: Context, names: tuple[str, ...], host: str | None) -> None:
    """Stop the named programs; with no names stop everything and supervisord."""
    appliance = obj.appliance()
    appliance.check_host(host)
    appliance.stop(names)


@cli.command()
@click.argument("names", nargs=-1, required=True)
@pass_context
def restart(obj: Context, names: tuple[str, ...]) -> None:
    """Restart the named programs (a kind such as 'worker' names all of them)."""
    obj.appliance().restart(names)


@cli.command()
@click.argument("names", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("--all-hosts", is_flag=True,
              help="Every host's programs, from the registry in the database.")
@pass_context
def status(obj: Context, names: tuple[str, ...], as_json: bool, all_hosts: bool) -> None:
    """Show the named programs (all by default); exit 0 only if all are running."""
    if all_hosts:
        return every_host(obj, as_json)
    rows = obj.appliance().status(names)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        for row in rows:
            pid = f"pid {row['pid']}" if row["pid"] else ""
            if row["uptime"] is None:
                how = row["error"] or row["detail"]
            else:
                how = f"up {row['uptime']}s as {row['user']}"
                if row["kind"] == "worker":
                    isolation = row["isolation"]
                    how += (f", isolation {isolation['mode']}" if isolation
                            else ", not answering")
            click.echo(f"{row['name']:<10} {row['state']:<8} {pid:<10} {how}")
    if any(row["state"] != "RUNNING" for row in rows):
        raise click.exceptions.Exit(NOT_RUNNING_EXIT)


def every_host(obj: Context, as_json: bool) -> None:
    rows = obj.appliance().every_host()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    for row in [] if as_json else rows:
        pid = f"pid {row['pid']}" if row["pid"] and row["state"] == "RUNNING" else ""
        how = row.get("detail") or f"{row['state'].lower()} for {row['since']}s"
        click.echo(f"{row['host']:<16} {row['name']:<10} {row['state']:<8} {pid:<10} {how}")
    if not rows or any(row["state"] != "RUNNING" for row in rows):
        raise click.exceptions.Exit(NOT_RUNNING_EXIT)


@cli.command()
@pass_context
def check(obj: Context) -> None:
    """Repair the component registry; report what keeps programs from serving."""
    appliance = obj.appliance()
    repairs = appliance.check()
    for line in repairs:
        click.echo(f"repaired {line}")
    if not repairs:
        click.echo("registry agrees with supervisord; nothing to repair")
    found, notes = appliance.problems()
    for line in notes:
        click.echo(f"note: {line}")
    for line in found:
        click.echo(f"problem: {line}")
    if found:
        raise ProgramFailed(f"{len(found)} problem(s) found; see the lines above")


@cli.command()
@click.option("--to", "to", default="all", show_default=True, metavar="all|KIND:ID",
              help="all, or browser:ID, session:ID or account:ID.")
@click.argument("text")
@pass_context
def message(obj: Context, to: str, text: str) -> None:
    """Show TEXT as a banner on the pages it is meant for, on every frontend."""
    from salvusctl import messaging  # the bus's format is web's (web/bus.py)
    from web import bus

    appliance = obj.appliance()
    try:
        kind, target = messaging.parse_target(to)
        outcome = appliance.message(kind, target, text)
    except (ValueError, bus.BusError) as exc:
        raise click.BadParameter(str(exc)) from None
    per = ", ".join(f"{name} {n}" for name, n in sorted(outcome.delivered.items()))
    click.echo(f"delivered to {outcome.total} browser(s) ({per})")
    for name in outcome.silent:
        click.echo(f"note: {name} did not answer (not running?); browsers on it did not "
                   "get the message")


@cli.command()
@click.argument("names", nargs=-1)
@click.option("--since", metavar="TIME", callback=logview.since_option,
              help="Only lines from TIME on: '2026-12-02 17:40', today, yesterday, 10m, "
                   "2h, 3d, '10 min ago'.")
@click.option("--level", "levels", metavar="LEVEL", callback=logview.level_option,
              help="Only LEVEL and more severe: debug, info, warning, error, critical.")
@click.option("--session", metavar="ID", help="Only the lines of this session.")
@click.option("-f", "--follow", is_flag=True,
              help="Print the last lines, then each new one as it comes (Ctrl-C ends).")
@click.option("-n", "--lines", type=click.IntRange(0), metavar="N",
              help="Only the last N lines (10 when following).")
@click.option("--no-pager", is_flag=True, help="Print straight out, not through a pager.")
@pass_context
def logs(obj: Context, names: tuple[str, ...], since: datetime | None, levels: tuple[str, ...],
         session: str | None, follow: bool, lines: int | None, no_pager: bool) -> None:
    """Show the programs' log lines (all by default; a kind such as 'web' names
    every frontend), oldest first. Read from the log table, or from the files in
    DATA/logs when its database is away."""
    filters = logview.Filters(names, since, levels, session)
    logview.show(obj.appliance(), filters, follow=follow, lines=lines, pager=not no_pager)


@cli.command()
@click.argument("file", required=False, type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
@click.option("--keep", type=click.IntRange(1), metavar="N",
              help="Then remove this appliance's older backups in DATA/backups beyond "
                   "the newest N.")
@pass_context
def backup(obj: Context, file: Path | None, force: bool, keep: int | None) -> None:
    """Back up the appliance's database (pg_dump, consistent while it serves) to
    FILE, by default DATA/backups/salvus-<instance>-<UTC time>.dump (mode 0600)."""
    from salvusctl import backup as backups

    backups.backup(obj.appliance(), file, force=force, keep=keep)


@cli.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--yes", is_flag=True, help="Replace the data without asking.")
@click.option("--adopt", metavar="INSTANCE",
              help="The backup comes from the appliance INSTANCE: its history (events, "
                   "log lines) becomes this data folder's.")
@pass_context
def restore(obj: Context, file: Path, yes: bool, adopt: str | None) -> None:
    """Replace the database's data with a backup (all or nothing), then migrate.
    Every program but postgres must be stopped first."""
    from salvusctl import backup as backups

    backups.restore(obj.appliance(), file, yes=yes, adopt=adopt, ask=backups.confirmation())


@cli.command("install-service")
@click.option("--user-unit", is_flag=True,
              help="A unit of your own user's systemd (~/.config/systemd/user), not root's.")
@click.option("--print", "to_stdout", is_flag=True, help="Only print the unit.")
@pass_context
def install_service(obj: Context, user_unit: bool, to_stdout: bool) -> None:
    """Install the systemd unit salvus-<instance>.service that starts the
    appliance at boot, and enable it."""
    from salvusctl import service
    from salvusctl.datadir import DataDir

    data = DataDir(obj.data)
    config = data.load_config()
    if to_stdout:
        click.echo(service.render(data, config, user_unit), nl=False)
    else:
        service.install(data, config, click.echo, user_unit=user_unit)


@cli.group()
def db() -> None:
    """Database commands."""


@db.command("migrate")
@pass_context
def db_migrate(obj: Context) -> None:
    """Apply pending sql/NNN_*.sql migrations in order."""
    obj.appliance().migrate()


def main() -> None:
    cli(prog_name="salvusctl")
