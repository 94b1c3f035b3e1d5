"""Two data folders on one machine run side by side without colliding."""

from __future__ import annotations

import json

import pytest

from tests import db
from tests.helpers import free_base_port, processes_of, run, wait_for

pytestmark = pytest.mark.slow


def pids(data) -> dict[str, int]:
    rows = json.loads(run(data, "status", "--json").stdout)
    return {row["name"]: row["pid"] for row in rows}


def two_data_folders(make_folder) -> tuple:
    """Two initialized data folders on ports of their own."""
    first, second = make_folder() / "a", make_folder() / "b"
    run(first, "init", "--base-port", str(free_base_port()))
    run(second, "init", "--base-port", str(free_base_port()))  # no port of the first's
    return first, second


def test_two_data_folders_both_run(make_folder):
    first, second = two_data_folders(make_folder)
    try:
        run(first, "start")
        run(second, "start")
        a, b = pids(first), pids(second)
        assert set(a) == set(b) == {"postgres", "memcached", "registry", "shipper",
                                       "worker0", "web0"}
        assert not set(a.values()) & set(b.values())
        # Each registry sees only its own instance's programs, with its own pids.
        for data, live in ((first, a), (second, b)):
            wait_for(lambda d=data, p=live: dict(db.query(
                d, "SELECT name, pid FROM components WHERE state = 'RUNNING'")) == p,
                what=f"registry of {data}")
        # Stopping one leaves the other untouched.
        run(first, "stop")
        assert processes_of(first) == {}
        assert pids(second) == b
    finally:
        run(first, "stop", check=False)
        run(second, "stop", check=False)
    assert processes_of(second) == {}


def test_session_uids_never_overlap_and_a_taken_range_is_refused(make_folder):
    from salvusctl.config import load
    from tests.helpers import edit_config
    from tests.web_client import Browserish, Frontend

    first, second = two_data_folders(make_folder)
    bases = [load(d / "salvus.conf").get("worker", "uid_base") for d in (first, second)]
    assert bases[0] != bases[1] and abs(bases[0] - bases[1]) >= 100000
    try:
        run(first, "start")
        # a live session of the first appliance, with a variable in it
        web_port = load(first / "salvus.conf").get("web", "port")
        page = Browserish(Frontend(web_port), "browser=two-folders")
        page.open()
        uid = page.run("a", "import os\nx = 42\nos.getuid()")[-2]["data"]["text/plain"]
        assert int(uid) >= bases[0]
        # the second asks for the first one's range: refused, with a free base named
        edit_config(second, {("worker", "uid_base"): str(bases[0])})
        refused = run(second, "start", check=False)
        errors = [line for line in refused.stderr.splitlines() if line.startswith("Error: ")]
        assert refused.returncode == 3 and len(errors) == 1, refused.stderr
        assert f"overlap the sessions of {first}" in errors[0] and "uid_base = " in errors[0]
        # with its own range it starts, and its workers touch nothing of the first's
        edit_config(second, {("worker", "uid_base"): str(bases[1])})
        run(second, "start")
        run(second, "restart", "worker")
        assert page.run("b", "x")[-2]["data"]["text/plain"] == "42"  # the same session
        page.close()
    finally:
        run(first, "stop", check=False)
        run(second, "stop", check=False)
    assert processes_of(first) == {} and processes_of(second) == {}
