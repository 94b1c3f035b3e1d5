"""As root, PostgreSQL runs as the unprivileged service user."""

from __future__ import annotations

import json
import os
import pwd
import shutil
from pathlib import Path

import pytest

from salvusctl.config import load
from tests.helpers import free_base_port, private_venv, processes_of, run

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="a service user is only used as root"),
]


def uid_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("Uid:")).split()[1])


def test_cluster_moves_out_of_a_folder_closed_to_the_service_user(make_folder):
    closed = make_folder()
    os.chmod(closed, 0o700)
    data = closed / "data"
    result = run(data, "init", "--base-port", str(free_base_port()))
    config = load(data / "salvus.conf")
    cluster = Path(config.get("database", "cluster"))
    assert cluster.is_absolute() and cluster.parent == Path("/var/lib/salvus/clusters")
    try:
        assert f"{closed} is closed to user 'salvus'" in result.stdout
        assert cluster.parent == Path("/var/lib/salvus/clusters")
        salvus = pwd.getpwnam("salvus")
        assert cluster.stat().st_uid == salvus.pw_uid
        assert oct(cluster.stat().st_mode & 0o777) == "0o700"
        run(data, "start")
        rows = {r["name"]: r for r in json.loads(run(data, "status", "--json").stdout)}
        assert uid_of(rows["postgres"]["pid"]) == salvus.pw_uid
    finally:
        run(data, "stop", check=False)
        for pid in processes_of(cluster):
            os.kill(pid, 9)
        shutil.rmtree(cluster, ignore_errors=True)
    assert processes_of(data) == {}


def test_an_install_in_a_private_folder_runs_the_whole_appliance(make_folder):
    """The most ordinary setup: a checkout (and its virtualenv) in root's 0700
    home. No permission on the host is changed; every program reads its install
    through its own view of the file system, and nothing else of that folder."""
    from tests.chaos import execute

    python = private_venv(make_folder())
    data = make_folder() / "data"
    salvusctl = [str(python), "-m", "salvusctl"]
    base = free_base_port()
    try:
        run(data, "init", "--base-port", str(base), salvusctl=salvusctl)
        started = run(data, "start", salvusctl=salvusctl)
        assert "Salvus is running" in started.stdout
        rows = {r["name"]: r for r in json.loads(run(data, "status", "--json").stdout)}
        assert rows["web0"]["user"] == "salvus" and rows["worker0"]["isolation"]["mode"] == "full"
        status, answer = execute(base, "import sys\n(sys.prefix, 6 * 7)")
        assert status == 200 and answer["result"]["text/plain"] == \
            repr((str(python.parent.parent), 42))
        assert oct(python.parent.parent.parent.stat().st_mode & 0o777) == "0o700"  # unchanged
    finally:
        run(data, "stop", check=False, salvusctl=salvusctl)
    assert processes_of(data) == {}
