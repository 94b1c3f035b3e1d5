"""Sessions live in the workers: any frontend serves any session, a frontend's
death loses nothing, a worker's death is said on every frontend. A real
appliance with two frontends and two workers."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import psycopg2
import pytest
from simple_websocket import ConnectionClosed

from tests.helpers import run, running_pid, started_appliance, wait_for
from tests.web_client import Browserish, Frontend

pytestmark = pytest.mark.timeout(300)
LINES = 10**5


@pytest.fixture(scope="module")
def appliance():
    with started_appliance("salvus-failover-", "--web", "2", "--workers", "2",
                           config={("worker", "engine"): "python"}) as (data, base, _):
        yield data, base


def _connected(port: int, name: str) -> Browserish | None:
    try:
        return Browserish(Frontend(port), f"browser={name}")
    except ConnectionRefusedError:
        return None


@pytest.fixture
def browsers():
    opened: list[Browserish] = []

    def connect(port: int, name: str, session: str | None = None,
                last_seq: int = 0) -> tuple[Browserish, dict]:
        # As a page does: a frontend that supervisord restarted is RUNNING a
        # moment before it listens, so a refused connection is tried again.
        browser = wait_for(lambda: _connected(port, name), 20, what=f"port {port} to listen")
        opened.append(browser)
        return browser, browser.open(session, last_seq)

    yield connect
    for browser in opened:
        browser.close()


def session_row(data: Path, session: str) -> tuple | None:
    conn = psycopg2.connect((data / "secrets" / "dsn").read_text().strip())
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT worker, owner, state FROM sessions WHERE id = %s", (session,))
            return cur.fetchone()
    finally:
        conn.close()


def drain(browser: Browserish, seconds: float) -> list[dict]:
    """What still arrives before the connection dies (or ``seconds`` pass)."""
    got = []
    deadline = time.monotonic() + seconds
    with contextlib.suppress(ConnectionClosed, TimeoutError):
        while time.monotonic() < deadline:
            got.append(browser.receive(max(deadline - time.monotonic(), 0.01)))
    return got


def test_kill_9_of_a_frontend_mid_output_loses_nothing(appliance, browsers):
    data, base = appliance
    page, _ = browsers(base, "kim")  # on web0
    # 10^5 lines over about two seconds: the kill comes in the middle.
    page.send(type="execute", cell="big", code=f"import time\nfor i in range({LINES}):\n"
                                               "    print(i)\n"
                                               "    if i % 10000 == 9999: time.sleep(0.2)")
    got = []
    while not any(m["type"] == "stream" for m in got):
        got.append(page.receive(30))
    os.kill(running_pid(data, "web0"), signal.SIGKILL)
    got += drain(page, 2)
    assert not any(m["type"] == "done" for m in got)  # it was cut off mid-output
    # The page resumes on web1 with what it has: every line once, one done.
    again, attached = browsers(base + 1, "kim", page.session, page.last_seq)
    assert attached["session"] == page.session and attached["complete"] is True
    rest = again.until_done("big", timeout=60)
    shown = [m for m in got + rest if m.get("cell") == "big"]
    text = "".join(m["text"] for m in shown if m["type"] == "stream")
    assert text == "".join(f"{i}\n" for i in range(LINES))
    assert [m["type"] for m in shown].count("done") == 1 and shown[-1]["status"] == "ok"
    seqs = [m["seq"] for m in shown]
    assert seqs == sorted(set(seqs))  # in order, none twice
    wait_for(lambda: running_pid(data, "web0"), 30, what="supervisord restarting web0")


def test_one_session_on_two_frontends_and_a_worker_that_dies(appliance, browsers):
    """The same session followed from both frontends; its worker is killed:
    both pages hear it, and the next run goes to the other worker."""
    data, base = appliance
    first, _ = browsers(base, "lee")
    assert first.run("a", "x = 1\nx")[-1]["status"] == "ok"
    second, attached = browsers(base + 1, "lee", first.session, 0)
    assert attached["session"] == first.session
    assert attached["cells"][0]["state"] == "done"
    assert second.run("b", "x + 1")[-2]["data"]["text/plain"] == "2"  # one namespace
    assert [m["type"] for m in first.until_done("b")][-2:] == ["result", "done"]
    worker = wait_for(lambda: (session_row(data, first.session) or [None])[0], 10,
                      what="the session's row")
    assert session_row(data, first.session) == (worker, "lee", "running")
    other = {"worker0": "worker1", "worker1": "worker0"}[worker]
    os.kill(running_pid(data, worker), signal.SIGKILL)
    run(data, "stop", worker)  # it stays down: the next run must go elsewhere
    try:
        for page in (first, second):
            status = next(m for m in iter(lambda p=page: p.receive(30), None)
                          if m["type"] == "session_status")
            assert status["state"] == "lost" and "stopped" in status["reason"]
        result = second.run("c", "'where am I'")
        assert result[-1]["status"] == "ok", result
        assert first.until_done("c")[-1]["status"] == "ok"  # the other page sees it too
        wait_for(lambda: session_row(data, first.session) == (other, "lee", "running"), 10,
                 what="the row naming the other worker")
    finally:
        run(data, "start", worker)


def test_a_session_is_only_its_browsers(appliance, browsers):
    """Another browser that learned a session's id, on another frontend, gets
    a session of its own: not the cells, not the namespace."""
    _, base = appliance
    owner, _ = browsers(base, "mia")
    owner.run("a", "secret = 42")
    stranger, attached = browsers(base + 1, "eve", owner.session, 0)
    assert attached["session"] != owner.session and attached["cells"] == []
    shown = stranger.run("b", "secret")
    assert [m["ename"] for m in shown if m["type"] == "error"] == ["NameError"]
