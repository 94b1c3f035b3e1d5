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


def test_two_data_folders_both_run(make_folder):
    first, second = make_folder() / "a", make_folder() / "b"
    run(first, "init", "--base-port", str(free_base_port()))
    port = free_base_port()
    while (first / "salvus.conf").read_text().count(f"= {port}\n"):
        port = free_base_port()
    run(second, "init", "--base-port", str(port))
    try:
        run(first, "start")
        run(second, "start")
        a, b = pids(first), pids(second)
        assert set(a) == set(b) == {"postgres", "memcached", "registry",
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
