"""A whole appliance under real supervisord and PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import signal
import urllib.request

import pytest

from salvusctl import logline
from salvusctl.config import load
from tests import db
from tests.helpers import alive, processes_of, run, wait_for

pytestmark = pytest.mark.slow

PROGRAMS = ["postgres", "memcached", "registry", "shipper", "worker0", "worker1", "web0"]


def status(data) -> dict[str, dict]:
    result = run(data, "status", "--json", check=False)
    return {row["name"]: row for row in json.loads(result.stdout)}


def test_status_shows_every_program_running(running):
    result = run(running, "status")
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == PROGRAMS
    assert all(line.split()[1] == "RUNNING" for line in lines)
    rows = status(running)
    assert all(rows[name]["pid"] > 0 for name in PROGRAMS)


def test_registry_records_every_program(running):
    def all_recorded():
        rows = dict(db.query(running, "SELECT name, state FROM components"))
        return all(rows.get(name) == "RUNNING" for name in PROGRAMS)

    wait_for(all_recorded, what="every program RUNNING in components")
    rows = dict(db.query(running, "SELECT name, pid FROM components"))
    live = status(running)
    assert {name: rows[name] for name in PROGRAMS} == {n: live[n]["pid"] for n in PROGRAMS}


def test_web_frontend_answers_health(running):
    import urllib.request

    port = int(next(line.split("=")[1] for line in (running / "salvus.conf").read_text()
                    .splitlines() if line.startswith("port")))
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as response:
        body = json.loads(response.read())
    assert body["status"] == "ok" and body["name"] == "web0"


def test_start_again_changes_nothing(running):
    before = status(running)
    result = run(running, "start")
    assert "already running" in result.stdout
    after = status(running)
    assert {n: r["pid"] for n, r in before.items()} == {n: r["pid"] for n, r in after.items()}


@pytest.mark.parametrize("name", ["worker1", "web0", "postgres"])
def test_restart_one_program_changes_its_pid_and_registry(running, name):
    old = status(running)
    result = run(running, "restart", name)
    assert name in result.stdout
    new = status(running)
    assert new[name]["state"] == "RUNNING"
    assert new[name]["pid"] != old[name]["pid"]
    others = [n for n in PROGRAMS if n != name]
    assert {n: new[n]["pid"] for n in others} == {n: old[n]["pid"] for n in others}
    wait_for(lambda: db.current(running, name) == ("RUNNING", new[name]["pid"]),
             what=f"registry to show {name} with its new pid")
    states = [state for state, _, _ in db.events(running, name)]
    assert states[-2:] == ["STARTING", "RUNNING"]


def test_kill_9_is_restarted_and_both_events_recorded(running):
    old_pid = status(running)["worker0"]["pid"]
    os.kill(old_pid, signal.SIGKILL)

    def restarted():
        row = status(running)["worker0"]
        return row["state"] == "RUNNING" and row["pid"] != old_pid and row["pid"]

    new_pid = wait_for(restarted, what="supervisord to restart worker0")
    wait_for(lambda: db.current(running, "worker0") == ("RUNNING", new_pid),
             what="registry to show the restarted worker0")
    history = db.events(running, "worker0")
    exited = [i for i, (state, pid, _) in enumerate(history)
              if state == "EXITED" and pid == old_pid]
    assert exited, history
    assert ("RUNNING", new_pid, "listener") in history[exited[-1]:]


def test_check_repairs_a_corrupted_row(running):
    wait_for(lambda: db.current(running, "web0") and db.current(running, "web0")[0] == "RUNNING",
             what="web0 recorded")
    real_pid = status(running)["web0"]["pid"]
    db.query(running, "UPDATE components SET state = 'STOPPED', pid = 1 WHERE name = 'web0'")
    db.query(running, "INSERT INTO components (instance, name, kind, host, state, updated_at)"
                      " SELECT instance, 'web9', 'web', host, 'RUNNING', now()"
                      " FROM components WHERE name = 'web0'")
    result = run(running, "check")
    assert "repaired web0: fixed state STOPPED -> RUNNING, pid 1 -> " f"{real_pid}" in result.stdout
    assert "repaired web9: removed row" in result.stdout
    assert db.current(running, "web0") == ("RUNNING", real_pid)
    assert db.current(running, "web9") is None
    assert db.events(running, "web0")[-1] == ("RUNNING", real_pid, "check")
    again = run(running, "check")
    assert "nothing to repair" in again.stdout


def test_stop_and_start_one_program(running):
    result = run(running, "stop", "web0")
    assert "web0" in result.stdout
    assert status(running)["web0"]["state"] == "STOPPED"
    assert run(running, "status", "web0", check=False).returncode == 3
    assert run(running, "status", "postgres").returncode == 0
    run(running, "start", "web0")
    assert status(running)["web0"]["state"] == "RUNNING"


def test_migrate_twice_is_a_no_op(running):
    before = db.query(running, "SELECT version, checksum, applied_at FROM schema_migrations")
    for _ in range(2):
        result = run(running, "db", "migrate")
        assert "up to date" in result.stdout
    after = db.query(running, "SELECT version, checksum, applied_at FROM schema_migrations")
    assert before == after and len(after) >= 1


def test_kind_name_restarts_every_program_of_that_kind(running):
    old = status(running)
    run(running, "restart", "worker")
    new = status(running)
    assert new["worker0"]["pid"] != old["worker0"]["pid"]
    assert new["worker1"]["pid"] != old["worker1"]["pid"]
    assert new["web0"]["pid"] == old["web0"]["pid"]


def test_zz_stop_leaves_no_process_behind(running):
    supervisord_pid = int((running / "run" / "supervisord.pid").read_text())
    ours = processes_of(running.parent)
    assert supervisord_pid in ours
    assert len(ours) >= len(PROGRAMS) + 1
    run(running, "stop")
    assert processes_of(running.parent) == {}
    assert [pid for pid in ours if alive(pid)] == []
    rows = {row["name"]: row["state"] for row in status(running).values()}
    assert set(rows.values()) == {"STOPPED"}
    run(running, "start")
    assert all(row["state"] == "RUNNING" for row in status(running).values())


def test_zzz_start_recovers_after_supervisord_is_killed(running):
    old = status(running)
    supervisord_pid = int((running / "run" / "supervisord.pid").read_text())
    os.kill(supervisord_pid, signal.SIGKILL)
    wait_for(lambda: not alive(supervisord_pid), what="supervisord to die")
    # The listener ends with its stdin; the other programs are left orphaned.
    wait_for(lambda: not alive(old["registry"]["pid"]), what="registry to end")
    orphans = [name for name in PROGRAMS if name != "registry"]
    assert all(alive(old[name]["pid"]) for name in orphans)
    result = run(running, "start")
    assert "supervisord is gone but" in result.stdout
    assert [name for name in PROGRAMS if alive(old[name]["pid"])] == []
    new = status(running)
    assert all(new[name]["state"] == "RUNNING" for name in PROGRAMS)
    # Exactly one copy of each program: nothing of the old supervisord is left.
    assert len([c for c in processes_of(running).values() if "supervisord" in c]) == 1


def test_workers_run_with_the_configured_engine_limits_and_isolation(running):
    from sage_worker import curve
    from salvusctl.config import load
    from salvusctl.probe import ping_worker

    config = load(running / "salvus.conf")
    keys = running / "secrets" / "curve"
    pong = ping_worker(f"tcp://127.0.0.1:{config.get('worker', 'port') + 1}",
                       curve.load_public(keys / "worker.key"),
                       curve.load_pair(keys / "web.key_secret"), timeout=30)
    assert pong is not None, "worker1 did not answer"
    assert pong["name"] == "worker1" and pong["engine"] == "sage"
    for key in ("max_sessions", "wall_time", "idle_timeout", "cpu_seconds", "memory_mb",
                "output_bytes", "disk_mb", "disk_files"):
        assert pong["limits"][key] == config.get("worker", key), key
    assert pong["isolation"]["mode"] == "full"
    rows = status(running)
    assert rows["worker1"]["isolation"] == pong["isolation"]


def test_programs_that_need_no_root_run_as_the_service_user(running):
    if os.geteuid() != 0:
        pytest.skip("a service user is only used as root")
    users = {name: row["user"] for name, row in status(running).items()}
    assert users == {"postgres": "salvus", "memcached": "salvus", "registry": "salvus",
                     "shipper": "salvus", "worker0": "root", "worker1": "root", "web0": "salvus"}
    worker = status(running)["worker0"]["pid"]
    with open(f"/proc/{worker}/status") as f:
        effective = int(next(line for line in f if line.startswith("CapEff:")).split()[1], 16)
    # chown, dac_read_search, kill, setgid, setuid, sys_admin: nothing else
    assert effective == sum(1 << cap for cap in (0, 2, 5, 6, 7, 21))


def known_secrets(data) -> set[str]:
    """Every secret the data folder holds: the database password, the web
    secret, supervisord's password, the CURVE secret keys."""
    secrets = set(re.findall(r"password=(\S+)", (data / "secrets" / "dsn").read_text()))
    secrets.add((data / "secrets" / "web_secret_key").read_text().strip())
    secrets.add((data / "secrets" / "supervisor_password").read_text().strip())
    for key in (data / "secrets" / "curve").glob("*.key_secret"):
        secrets |= set(re.findall(r'secret-key = "([^"]+)"', key.read_text()))
    return {s for s in secrets if s}


def test_programs_log_one_structured_line_per_event_and_never_a_secret(running):
    body = json.dumps({"code": "print('logged?')"}).encode()
    port = load(running / "salvus.conf").get("web", "port")
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/execute", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        assert json.load(response)["stdout"] == "logged?\n"
    secrets = known_secrets(running)
    assert len(secrets) >= 5
    for log in (running / "logs").glob("*.log"):
        text = log.read_text(errors="replace")
        leaked = [s for s in secrets if s in text]
        assert not leaked, f"{log.name} holds a secret"
    rows = db.query(running, "SELECT message FROM log")
    assert rows and not [s for s in secrets for (message,) in rows if s in message]
    # supervisord is told it is root, and wants a password: no CRITICAL line.
    assert not db.query(running, "SELECT message FROM log WHERE program = 'supervisord' "
                        "AND level = 'CRITICAL'")
    for program in ("web0", "worker0", "registry"):
        lines = [logline.parse(line) for line in
                 (running / "logs" / f"{program}.log").read_text().splitlines() if line]
        ours = [line for line in lines if line is not None]
        assert ours and all(line["program"] == program for line in ours)
        assert all(line["time"].endswith("Z") and len(line["time"]) == 27 for line in ours)


def test_status_of_every_host_comes_from_the_registry_and_doubts_a_silent_host(running):
    instance = load(running / "salvus.conf").get("salvus", "instance")
    host = load(running / "salvus.conf").get("salvus", "host")
    # The registry beats on supervisord's tick (every 5 s).
    wait_for(lambda: run(running, "status", "--all-hosts", check=False).returncode == 0,
             timeout=30, what="this host's heartbeat")
    lines = run(running, "status", "--all-hosts").stdout.splitlines()
    assert sorted(line.split()[1] for line in lines) == sorted(PROGRAMS)
    assert all(line.split()[0] == host and line.split()[2] == "RUNNING" for line in lines)
    try:  # a host of the same appliance whose registry went silent a minute ago
        db.query(running, "INSERT INTO components (instance, name, kind, host, pid, state, "
                 "updated_at) VALUES (%s, 'web9', 'web', 'hostb', 42, 'RUNNING', now())",
                 (instance,))
        db.query(running, "INSERT INTO hosts (instance, host, seen_at) VALUES "
                 "(%s, 'hostb', now() - interval '61 seconds')", (instance,))
        result = run(running, "status", "--all-hosts", check=False)
        assert result.returncode == 3
        [silent] = [line for line in result.stdout.splitlines() if line.startswith("hostb")]
        assert "web9" in silent and "UNKNOWN" in silent and "last heard from 6" in silent
        rows = json.loads(run(running, "status", "--all-hosts", "--json", check=False).stdout)
        assert {r["host"] for r in rows} == {host, "hostb"}
    finally:
        db.query(running, "DELETE FROM components WHERE host = 'hostb'")
        db.query(running, "DELETE FROM hosts WHERE host = 'hostb'")
