"""salvusctl backup and restore: a consistent copy of the database, put back
all or nothing, also on a fresh data folder (disaster recovery)."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import secrets
import select
import shutil
import stat
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from salvusctl import config as configfile
from salvusctl import migrate
from salvusctl.resources import sql_dir
from tests import db
from tests.helpers import (
    SALVUSCTL,
    edit_config,
    free_base_port,
    processes_of,
    run,
    started_appliance,
    wait_for,
)
from tests.test_cli_errors import assert_one_line_error

WROTE = re.compile(r"^wrote (?P<path>/\S+\.dump) \((?P<size>[\d.]+ (bytes|KB|MB))\) "
                   r"in (?P<took>[\d.]+) s$", re.M)


def instance_of(data: Path) -> str:
    return configfile.load(data / "salvus.conf").get("salvus", "instance")


def link(data: Path, name: str, text: str = "") -> None:
    """A permalink row, as /api/share writes it."""
    content = json.dumps({"cells": [{"code": f"{name} = 1 # {text}"}]})
    db.query(data, "INSERT INTO short_urls (id, content, content_hash) VALUES (%s, %s, %s)",
             (name, content, secrets.token_hex(32)))


def links(data: Path) -> set[str]:
    return {row[0] for row in db.query(data, "SELECT id FROM short_urls")}


def written(result: subprocess.CompletedProcess) -> Path:
    match = WROTE.search(result.stdout)
    assert match, result.stdout
    return Path(match["path"])


@pytest.fixture
def database_only(initialized):
    """An initialized data folder whose supervisord runs the database alone."""
    run(initialized, "start", "postgres")
    try:
        yield initialized
    finally:
        run(initialized, "stop", check=False)
    assert processes_of(initialized) == {}


def test_backup_needs_the_database_running(initialized):
    result = run(initialized, "backup", check=False)
    assert_one_line_error(result, 7, "database is not running", "salvusctl start postgres")
    assert not (initialized / "backups").exists()


def test_backup_writes_a_private_file_and_refuses_to_overwrite(database_only, make_folder):
    data = database_only
    link(data, "Before")
    result = run(data, "backup")
    path = written(result)
    assert path.parent == data / "backups"
    assert re.fullmatch(rf"salvus-{instance_of(data)}-\d{{8}}T\d{{6}}Z\.dump", path.name)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.read_bytes().startswith(b"PGDMP")
    assert "log database" not in result.stdout  # the logs are in this database, and in it
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file left

    chosen = make_folder() / "mine.dump"
    assert written(run(data, "backup", str(chosen))) == chosen
    before = chosen.read_bytes()
    refused = run(data, "backup", str(chosen), check=False)
    assert_one_line_error(refused, 1, str(chosen), "exists", "--force")
    assert chosen.read_bytes() == before
    link(data, "LaterOn")
    assert written(run(data, "backup", str(chosen), "--force")) == chosen
    assert chosen.read_bytes() != before

    missing = make_folder() / "no" / "such.dump"
    assert_one_line_error(run(data, "backup", str(missing), check=False), 1,
                          str(missing.parent), "does not exist")
    assert_one_line_error(run(data, "backup", str(chosen.parent), check=False), 1,
                          "is a folder")


def test_keep_removes_the_oldest_default_backups_only(database_only):
    data = database_only
    folder = data / "backups"
    folder.mkdir(mode=0o700)
    instance = instance_of(data)
    old = [folder / f"salvus-{instance}-2020010{i}T000000Z.dump" for i in range(1, 4)]
    for path in old:
        path.write_bytes(b"PGDMP")
    other = folder / "salvus-someoneelse-20200101T000000Z.dump"
    mine = folder / "keep-me.dump"
    for path in (other, mine):
        path.write_bytes(b"PGDMP")
    result = run(data, "backup", "--keep", "2")
    new = written(result)
    assert sorted(folder.iterdir()) == sorted([old[2], new, other, mine])
    for path in old[:2]:
        assert f"removed old backup {path}" in result.stdout


def immutable(folder: Path, on: bool) -> bool:
    return subprocess.run(["chattr", "+i" if on else "-i", str(folder)], capture_output=True,
                          check=False).returncode == 0


def test_backup_into_a_folder_it_may_not_write_says_so(database_only, make_folder):
    folder = make_folder()
    if not immutable(folder, True):
        pytest.skip("chattr +i is not possible here")
    try:
        result = run(database_only, "backup", str(folder / "x.dump"), check=False)
    finally:
        immutable(folder, False)
    assert_one_line_error(result, 1, f"cannot write in {folder}", "Operation not permitted")
    assert list(folder.iterdir()) == []


def test_backup_onto_a_full_disk_says_so_and_leaves_nothing(database_only, make_folder):
    data = database_only
    link(data, "Bulkier", secrets.token_urlsafe(400_000))  # more than the disk holds
    disk = make_folder()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)],
                             capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        result = run(data, "backup", str(disk / "x.dump"), check=False)
        left = list(disk.iterdir())
    finally:
        subprocess.run(["umount", str(disk)], check=True)
    assert_one_line_error(result, 1, "could not be written", "No space left", "free some space")
    assert left == []


def test_the_log_database_of_its_own_is_named_as_not_backed_up(initialized, log_db):
    edit_config(initialized, {("logs", "dsn"): log_db})
    run(initialized, "start", "postgres")
    try:
        result = run(initialized, "backup")
    finally:
        run(initialized, "stop", check=False)
    written(result)
    assert "note: the log database ([logs] dsn) is not in this backup" in result.stdout


@pytest.mark.parametrize("content, words", [
    (b"", "not a pg_dump custom archive"),
    (b"-- PostgreSQL database dump\nCREATE TABLE x ();\n", "not a pg_dump custom archive"),
    (b"PGDMP\x01\x0e\x00\x04\x08\x03" + bytes(64), "not a pg_dump custom archive"),  # tar
    (b"PGDMP\x01\x0e\x00\x04\x08\x01", "cannot be read by pg_restore"),  # cut short
    (b"PGDMP\x01\x0e\x00\x04\x08\x01" + bytes(64), "not of a Salvus database"),
])
def test_a_file_that_is_not_a_backup_is_refused(database_only, make_folder, content, words):
    path = make_folder() / "backup.dump"
    path.write_bytes(content)
    link(database_only, "Staying")
    result = run(database_only, "restore", str(path), "--yes", check=False)
    assert_one_line_error(result, 1, str(path), words)
    assert links(database_only) == {"Staying"}


def test_a_dump_of_another_database_is_refused(database_only, pg_cluster, make_folder):
    from salvusctl import postgres

    data, config = pg_cluster
    path = make_folder() / "other.dump"
    with open(path, "wb") as out:
        subprocess.run([str(postgres.find_bindir() / "pg_dump"), "-Fc", "-d",
                        postgres.embedded_dsn(data, config, "postgres")],
                       stdout=out, check=True, timeout=60)
    result = run(database_only, "restore", str(path), "--yes", check=False)
    assert_one_line_error(result, 1, "not of a Salvus database", "schema_migrations")


def test_a_missing_file_is_named(database_only):
    result = run(database_only, "restore", "/nonexistent/x.dump", "--yes", check=False)
    assert_one_line_error(result, 1, "/nonexistent/x.dump", "does not exist")


def test_a_backup_of_a_newer_salvus_is_refused_before_anything_changes(database_only,
                                                                       make_folder):
    data = database_only
    db.query(data, "CREATE TABLE from_the_future (id text PRIMARY KEY)")
    db.query(data, "INSERT INTO schema_migrations (version, name, checksum) "
                   "VALUES (999, 'from_the_future', 'x')")
    path = written(run(data, "backup", str(make_folder() / "newer.dump")))
    db.query(data, "DROP TABLE from_the_future")
    db.query(data, "DELETE FROM schema_migrations WHERE version = 999")
    link(data, "Staying")
    result = run(data, "restore", str(path), "--yes", check=False)
    assert_one_line_error(result, 8, "newer Salvus", "999_from_the_future.sql")
    assert links(data) == {"Staying"}


def test_a_truncated_backup_changes_nothing_and_the_whole_one_restores(database_only,
                                                                       make_folder):
    data = database_only
    link(data, "Before")
    link(data, "Bulkier", secrets.token_urlsafe(300_000))  # the last data in the archive
    whole = written(run(data, "backup", str(make_folder() / "whole.dump")))
    link(data, "AfterIt")
    db.query(data, "CREATE TABLE newer_feature (id int)")  # as a newer migration might
    cut = whole.with_name("cut.dump")
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 9 // 10])

    result = run(data, "restore", str(cut), "--yes", check=False)
    assert_one_line_error(result, 1, str(cut), "could not be read to the end",
                          "not changed")
    assert links(data) == {"Before", "Bulkier", "AfterIt"}
    assert db.query(data, "SELECT count(*) FROM newer_feature") == [(0,)]

    result = run(data, "restore", str(whole), "--yes")
    assert "restored the backup" in result.stdout
    assert links(data) == {"Before", "Bulkier"}
    # Everything of the newer schema went; the ledger is the backup's, complete.
    assert db.query(data, "SELECT to_regclass('newer_feature')") == [(None,)]
    versions = [row[0] for row in db.query(data, "SELECT version FROM schema_migrations "
                                                 "ORDER BY 1")]
    assert versions == [m.version for m in migrate.discover(sql_dir())]


def test_restore_refused_without_yes_when_no_one_can_answer(database_only, make_folder):
    data = database_only
    link(data, "Before")
    path = written(run(data, "backup", str(make_folder() / "b.dump")))
    link(data, "AfterIt")
    result = run(data, "restore", str(path), check=False)  # stdin is not a terminal
    assert_one_line_error(result, 1, "replaces all data", "--yes")
    assert links(data) == {"Before", "AfterIt"}


def test_restore_asks_a_person_at_a_terminal(database_only, make_folder):
    """Without --yes a terminal gets the question; anything but yes changes nothing."""
    data = database_only
    link(data, "Before")
    path = written(run(data, "backup", str(make_folder() / "b.dump")))
    link(data, "AfterIt")
    primary, secondary = pty.openpty()
    try:
        proc = subprocess.Popen([*SALVUSCTL, "--data", str(data), "restore", str(path)],
                                stdin=secondary, stdout=subprocess.DEVNULL, stderr=secondary)
        os.close(secondary)
        asked = b""
        deadline = time.monotonic() + 60
        while b"[y/N]" not in asked:
            assert time.monotonic() < deadline, asked
            if select.select([primary], [], [], 1)[0]:
                asked += os.read(primary, 1024)
        os.write(primary, b"n\n")
        assert proc.wait(timeout=60) == 1
        with contextlib.suppress(OSError):  # EIO once the child is gone
            while select.select([primary], [], [], 0.5)[0]:
                chunk = os.read(primary, 1024)
                if not chunk:
                    break
                asked += chunk
    finally:
        os.close(primary)
    assert b"Replace all data of the database of" in asked
    assert b"Error: nothing restored (not confirmed)" in asked
    assert links(data) == {"Before", "AfterIt"}


def test_an_older_backup_is_migrated_up_to_date(database_only, make_folder):
    data = database_only
    link(data, "KeptIt")
    # As Salvus was before its last migration: no sessions table in the ledger.
    db.query(data, "DROP TABLE sessions")
    db.query(data, "DELETE FROM schema_migrations WHERE version = 5")
    path = written(run(data, "backup", str(make_folder() / "old.dump")))
    run(data, "db", "migrate")
    result = run(data, "restore", str(path), "--yes")
    assert "applying migration 005_sessions.sql" in result.stdout
    assert links(data) == {"KeptIt"}
    assert db.query(data, "SELECT count(*) FROM sessions") == [(0,)]


# ---------------------------------------------------------------- whole appliances


def post(port: int, path: str, body: dict, timeout: float = 60) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method="POST",
                                     data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def share(port: int, code: str) -> str:
    return post(port, "/api/share", {"cells": [{"code": code}]})["id"]


def opened(port: int, link_id: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/s/{link_id}",
                                    timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, ""


def busy_sessions(data: Path, port: int) -> int:
    """Sessions worker0 is running code in, as it says itself."""
    from sage_worker import curve
    from salvusctl import probe

    pong = probe.ping_worker(f"tcp://127.0.0.1:{port + 100}",
                             curve.load_public(data / "secrets/curve/worker.key"),
                             curve.load_pair(data / "secrets/curve/web.key_secret"))
    return pong["busy"] if pong else 0


def running_pids(data: Path) -> dict[str, int]:
    return {row["name"]: row["pid"] for row in json.loads(
        run(data, "status", "--json", check=False).stdout) if row["state"] == "RUNNING"}


@pytest.fixture(scope="module")
def serving():
    """A running appliance with one link shared, a backup taken while a
    session computes, and a second link shared after it."""
    with started_appliance("salvus-backup-") as (data, port, _):
        before = share(port, "before_backup = 6*7")
        answer: dict = {}

        def compute():
            answer.update(post(port, "/api/execute", {
                "code": "import time\ntime.sleep(8)\nprint(6*7)", "timeout": 30}))
            answer["done"] = time.monotonic()

        computing = threading.Thread(target=compute)
        computing.start()
        try:
            wait_for(lambda: busy_sessions(data, port) > 0, what="the session to compute")
            backed_up = run(data, "backup")
            finished = time.monotonic()
            still_busy = busy_sessions(data, port)
        finally:
            computing.join(timeout=60)
        after = share(port, "after_backup = 1")
        yield {"data": data, "port": port, "file": written(backed_up), "before": before,
               "after": after, "answer": answer, "backup_finished": finished,
               "still_busy": still_busy}


@pytest.mark.slow
def test_backup_of_a_serving_appliance_while_a_session_computes(serving):
    answer = serving["answer"]
    assert answer.get("status") == "ok" and answer["stdout"] == "42\n", answer
    # The backup ran, and ended, while the cell computed; the cell was not disturbed.
    assert serving["still_busy"] > 0
    assert serving["backup_finished"] < answer["done"]
    assert serving["file"].stat().st_size > 0
    assert stat.S_IMODE(serving["file"].stat().st_mode) == 0o600


@pytest.mark.slow
def test_restore_refused_while_programs_run(serving):
    data = serving["data"]
    result = run(data, "restore", str(serving["file"]), "--yes", check=False)
    assert_one_line_error(result, 1, "web0", "worker0", "registry", "shipper", "memcached",
                          "salvusctl stop")
    assert opened(serving["port"], serving["after"])[0] == 200


@pytest.mark.slow
def test_restore_brings_back_the_moment_of_the_backup(serving):
    data, port = serving["data"], serving["port"]
    refused = run(data, "restore", str(serving["file"]), "--yes", check=False)
    fix = re.search(r"`salvusctl (stop [a-z ]+)`", refused.stderr)[1]
    run(data, *fix.split())  # the fix the error names
    assert set(running_pids(data)) == {"postgres"}
    result = run(data, "restore", str(serving["file"]), "--yes")
    assert "restored the backup" in result.stdout
    assert "note:" not in result.stdout  # one instance in it: this folder's own
    run(data, "start")
    status, page = opened(port, serving["before"])
    assert status == 200 and "before_backup = 6*7" in page
    assert opened(port, serving["after"])[0] == 404  # shared after the backup: gone
    # The registry says what runs now, not what ran when the backup was taken.
    live = running_pids(data)
    wait_for(lambda: dict(db.query(
        data, "SELECT name, pid FROM components WHERE state = 'RUNNING'")) == live,
        what="the registry to agree with supervisord")


@pytest.mark.slow
def test_disaster_recovery_on_a_fresh_data_folder(serving, make_folder):
    """New machine: init, restore (nothing runs yet), start: the links open; with
    --adopt the old appliance's history and log lines are this one's."""
    old = instance_of(serving["data"])
    copy = make_folder() / "offsite.dump"
    shutil.copy(serving["file"], copy)
    data = make_folder() / "data"
    port = free_base_port()
    run(data, "init", "--base-port", str(port))
    new = instance_of(data)
    try:
        plain = run(data, "restore", str(copy), "--yes")
        assert "starting the embedded database for the restore" in plain.stdout
        assert f"--adopt {old}" in plain.stdout  # the note names the option
        assert processes_of(data) == {}  # the database ran for the restore only
        adopted = run(data, "restore", str(copy), "--yes", "--adopt", old)
        assert f"adopted instance {old}" in adopted.stdout
        assert instance_of(data) == new  # the folder keeps its own id
        run(data, "start", "postgres")
        for table in ("components", "component_events", "browsers", "log", "log_cursors"):
            assert db.query(data, f"SELECT count(*) FROM {table} WHERE instance = %s",
                            (old,)) == [(0,)], table
        # This folder's registry and shipper never ran: what they name is the old history.
        assert db.query(data, "SELECT count(*) FROM component_events WHERE instance = %s"
                              " AND source = 'listener'", (new,))[0][0] > 0
        assert db.query(data, "SELECT count(*) FROM log WHERE instance = %s",
                        (new,))[0][0] > 0
        run(data, "start")
        status, page = opened(port, serving["before"])
        assert status == 200 and "before_backup = 6*7" in page
        assert opened(port, serving["after"])[0] == 404
    finally:
        run(data, "stop", check=False)
    assert processes_of(data) == {}
