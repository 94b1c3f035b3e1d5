"""An appliance on seven hosts of one machine: network namespaces on a bridge
(tests/netns.py), one data folder each, made as an admin makes them (init on
the first host, salvus.conf and secrets/ copied, init --host on the others).

    db      postgres (the others reach it over TLS)
    door1   haproxy0      door2   haproxy1
    front1  web0          front2  web1
    comp1   worker0       comp2   worker1

Chromium, outside every namespace, goes through haproxy over https. One
frontend's host, one worker's link and one haproxy's host are lost in turn;
each time the page goes on, and `status --all-hosts` and `check` name what
was lost.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg2
import pytest
from playwright.sync_api import expect

from tests.helpers import COMMAND_TIMEOUT, free_base_port, kill_everything_of, wait_for
from tests.netns import network
from tests.test_browser import ARTIFACTS, cell, result, run_cell, wait_ready

HOSTS = ["db", "door1", "door2", "front1", "front2", "comp1", "comp2"]
START_ORDER = [["db"], ["comp1", "comp2"], ["front1", "front2"], ["door1", "door2"]]

# Namespaces need root (CI runs as root; the README's install step brings iproute2).
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


class Hosts:
    """The seven hosts: their namespaces, data folders and salvusctl."""

    def __init__(self, net, folder: Path, base: int):
        self.net, self.folder, self.base = net, folder, base

    def data(self, host: str) -> Path:
        return self.folder / host

    def salvusctl(self, host: str, *args: str, check: bool = True
                  ) -> subprocess.CompletedProcess:
        result = self.net.run(host, [sys.executable, "-m", "salvusctl", "--data",
                                     str(self.data(host)), *args],
                              capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
                              stdin=subprocess.DEVNULL, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"[{host}] salvusctl {' '.join(args)} exited "
                                 f"{result.returncode}\n{result.stdout}\n{result.stderr}")
        return result

    def start_all(self, hosts: list[str]) -> None:
        """``salvusctl start --host`` on each, side by side."""
        running = {host: self.net.run_async(host, [
            sys.executable, "-m", "salvusctl", "--data", str(self.data(host)),
            "start", "--host", host]) for host in hosts}
        for host, proc in running.items():
            out, err = proc.communicate(timeout=COMMAND_TIMEOUT)
            assert proc.returncode == 0, f"[{host}] start exited {proc.returncode}\n{out}\n{err}"

    def url(self, door: int) -> str:
        return f"https://{self.net.addresses[f'door{door + 1}']}:{self.base + 700 + door}/"

    def database(self):
        password = (self.data("db") / "secrets" / "pgpass").read_text().strip().rsplit(":")[-1]
        return psycopg2.connect(host=self.net.addresses["db"], port=self.base + 200,
                                dbname="salvus", user="salvus", password=password,
                                sslmode="require", connect_timeout=10)

    def every_host(self, host: str) -> list[dict]:
        said = self.salvusctl(host, "status", "--all-hosts", "--json", check=False)
        return json.loads(said.stdout)


def _make(hosts: Hosts) -> None:
    net, base = hosts.net, hosts.base
    pairs = " ".join(f"{name}={address}" for name, address in net.addresses.items())
    first = hosts.data("db")
    said = hosts.salvusctl(
        "db", "init", "--host", "db", "--base-port", str(base), "--haproxy", "1",
        "--set", f"salvus.hosts={pairs}", "--set", "database.host=db",
        "--set", "haproxy.hosts=door1 door2", "--set", "web.hosts=front1 front2",
        "--set", "worker.hosts=comp1 comp2", "--set", "worker.engine=python",
        "--set", "worker.spares=1").stdout
    assert "initialized" in said
    for host in HOSTS[1:]:
        # What an admin copies to each host: the config and the shared secrets.
        data = hosts.data(host)
        data.mkdir()
        os.chmod(data, 0o755)
        shutil.copy2(first / "salvus.conf", data / "salvus.conf")
        shutil.copytree(first / "secrets", data / "secrets")
        said = hosts.salvusctl(host, "init", "--host", host).stdout
        assert f"is host {host}'s ({net.addresses[host]})" in said
    for tier in START_ORDER:
        hosts.start_all(tier)


@pytest.fixture(scope="module")
def hosts():
    folder = Path(tempfile.mkdtemp(prefix="salvus-hosts-", dir="/tmp"))
    os.chmod(folder, 0o755)
    try:
        with network(HOSTS) as net:
            made = Hosts(net, folder, free_base_port())
            try:
                _make(made)
                yield made
            finally:
                net.mend()
                for tier in reversed(START_ORDER):
                    for host in tier:
                        if (made.data(host) / "host").exists():
                            made.salvusctl(host, "stop", check=False)
    finally:
        kill_everything_of(folder)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def page(chromium, hosts, request):
    context = chromium.new_context(ignore_https_errors=True)  # our self-signed certificate
    page = context.new_page()
    page.set_default_timeout(30000)
    page.goto(hosts.url(0))
    wait_ready(page)
    yield page
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{request.node.name}.png", full_page=True)
    context.close()


def test_every_host_runs_its_share_and_status_shows_them_all(hosts):
    rows = hosts.every_host("front2")
    placed = {(row["host"], row["name"]) for row in rows if row["state"] == "RUNNING"}
    for host, name in [("db", "postgres"), ("door1", "haproxy0"), ("door2", "haproxy1"),
                       ("front1", "web0"), ("front2", "web1"), ("comp1", "worker0"),
                       ("comp2", "worker1"), ("front1", "memcached")]:
        assert (host, name) in placed, rows
    assert {(host, "registry") for host in HOSTS} <= placed
    assert {(host, "shipper") for host in HOSTS} <= placed
    # Each host runs its share and nothing else.
    assert not any(row["host"] == "comp1" and row["kind"] == "web" for row in rows)
    said = hosts.salvusctl("comp1", "status")
    assert "worker0" in said.stdout and "web" not in said.stdout
    # The other hosts reach the database over TLS only.
    with hosts.database() as conn, conn.cursor() as cur:
        cur.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        assert cur.fetchone()[0] is True
    conn.close()
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(host=hosts.net.addresses["db"], port=hosts.base + 200,
                         dbname="salvus", user="salvus", password="x", sslmode="disable",
                         connect_timeout=10).close()


def test_start_on_the_wrong_host_is_refused_with_the_fix(hosts):
    said = hosts.salvusctl("comp1", "start", "--host", "comp2", check=False)
    assert said.returncode != 0
    assert "is host comp1's data folder, not comp2's" in said.stderr
    assert "Traceback" not in said.stderr


def _session_worker(hosts) -> str:
    with hosts.database() as conn, conn.cursor() as cur:
        cur.execute("SELECT worker FROM sessions WHERE state = 'running'"
                    " ORDER BY last_activity DESC LIMIT 1")
        row = cur.fetchone()
    conn.close()
    return row[0] if row else ""


def _problems(hosts, host: str) -> str:
    said = hosts.salvusctl(host, "check", check=False)
    return said.stdout + said.stderr


def test_the_page_goes_on_when_a_frontend_a_worker_and_a_haproxy_are_lost(hosts, page):
    run_cell(page, "1+1", 0)
    expect(result(page, 0)).to_have_attribute("data-plain", "2")

    # 1. front1's host dies with everything on it (web0, its registry, ...).
    hosts.net.kill_all("front1")
    run_cell(page, "2+3", 1)
    expect(result(page, 1)).to_have_attribute("data-plain", "5")
    assert "web0 on host front1 does not answer" in _problems(hosts, "front2")

    # 2. The worker that holds the page's session loses its link.
    worker = wait_for(lambda: _session_worker(hosts), what="the session's row")
    host = {"worker0": "comp1", "worker1": "comp2"}[worker]
    hosts.net.cut(host)
    expect(page.locator("#status")).to_contain_text("lost the session", timeout=30000)
    run_cell(page, "3*7", 2)
    expect(result(page, 2)).to_have_attribute("data-plain", "21")
    assert _session_worker(hosts) != worker
    assert f"{worker} on host {host} does not answer" in _problems(hosts, "front2")

    # 3. door1's host, through which the page came, dies.
    hosts.net.kill_all("door1")
    expect(page.locator("#status")).to_have_text("connected", timeout=30000)
    run_cell(page, "6*7", 3)
    expect(result(page, 3)).to_have_attribute("data-plain", "42")
    assert cell(page, 0).get_attribute("data-status") == "ok"
    said = _problems(hosts, "front2")
    assert "haproxy0 on host door1 does not answer" in said

    # The registry: the lost hosts fall silent; status names them, and fails.
    def silent():
        rows = hosts.every_host("front2")
        lost = {row["host"] for row in rows if row["state"] == "UNKNOWN"}
        return rows if {"front1", "door1", host} <= lost else None

    rows = wait_for(silent, timeout=60, interval=1, what="the lost hosts to fall silent")
    assert all(row["state"] == "RUNNING" for row in rows
               if row["host"] in {"db", "door2", "front2"})
    said = hosts.salvusctl("front2", "status", "--all-hosts", check=False)
    assert said.returncode == 3 and "front1" in said.stdout and "UNKNOWN" in said.stdout
    said = _problems(hosts, "front2")
    assert "host front1:" in said and "host door1:" in said and f"host {host}:" in said
