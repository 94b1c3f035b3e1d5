"""The frontends' bus and the browsers table, on a real appliance with two
frontends: messages to any browser wherever it is connected (salvusctl
message, and a frontend's Python API), CURVE on every link, loss detected,
rows that follow websockets and are repaired after a frontend dies."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

import gevent
import psycopg2
import pytest
import zmq
import zmq.auth

from sage_worker import curve
from tests.helpers import run, running_pid, started_appliance, wait_for
from tests.web_client import Browserish, Frontend
from web import bus

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def appliance():
    with started_appliance("salvus-bus-", "--web", "2", "--workers", "1",
                           config={("worker", "engine"): "python"}) as (data, base, _):
        yield data, base


@pytest.fixture
def browsers(appliance):
    """Browsers connected through the websocket, closed afterwards."""
    opened: list[Browserish] = []

    def connect(port: int, name: str) -> Browserish:
        browser = Browserish(Frontend(port), f"browser={name}")
        opened.append(browser)
        assert browser.open()["type"] == "attached"
        return browser

    yield connect
    for browser in opened:
        browser.close()


def rows(data: Path) -> list[tuple]:
    conn = psycopg2.connect((data / "secrets" / "dsn").read_text().strip())
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT browser, session, frontend, pid FROM browsers ORDER BY browser")
            return cur.fetchall()
    finally:
        conn.close()


def announcements(browser: Browserish, count: int, timeout: float = 10) -> list[dict]:
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        message = browser.receive(max(deadline - time.monotonic(), 0.01))
        if message["type"] == "announcement":
            got.append(message)
    return got


# ------------------------------------------------------------------ format


@pytest.mark.parametrize("frames", [
    [b"msg", b"{}", b"{}"],  # no header fields
    [b"nope", b'{"from":"a","boot":"b","seq":1}', b"{}"],  # unknown kind
    [b"msg", b'{"from":"a","boot":"b","seq":0}', b"{}"],  # seq starts at 1
    [b"msg", b'{"from":"a","boot":"b","seq":1}', b'{"id":"i","to":"all","target":null,'
     b'"text":"","sender":"s"}'],  # empty text
    [b"msg", b'{"from":"a","boot":"b","seq":1}', b'{"id":"i","to":"browser","target":null,'
     b'"text":"hi","sender":"s"}'],  # a browser unnamed
    [b"ack", b'{"from":"a","boot":"b","seq":1}', b'{"id":"i","origin":"o","delivered":-1}'],
    [b"beat", b'{"from":"a","boot":"b","seq":1}', b"[1]"],
    [b"beat", b"not json", b"{}"],
    [b"beat"],
])
def test_the_bus_refuses_malformed_messages(frames):
    with pytest.raises(bus.BusError):
        bus.decode(frames)


def test_lost_messages_are_counted_and_said():
    said: list[str] = []
    listener = bus.Bus("web9", None, set(), "tcp://127.0.0.1:1", Path("/nonexistent"),
                       deliver=lambda message: 0, say=said.append)
    for seq in (1, 2, 5, 6):  # 3 and 4 never came
        listener.receive(bus.encode(b"beat", "web8", "boot1", seq, {"http": ""}))
    listener.receive(bus.encode(b"beat", "web8", "boot2", 1, {"http": ""}))  # it restarted
    listener.receive(bus.encode(b"beat", "web8", "boot2", 3, {"http": ""}))
    assert listener.lost == 3
    assert said == ["bus: 2 messages from web8 never arrived (before its seq 5; 2 lost in "
                    "all)", "bus: 1 messages from web8 never arrived (before its seq 3; 3 "
                    "lost in all)"]
    listener.receive([b"msg", b"{", b"}"])
    assert listener.invalid == 1 and "malformed" in said[-1]


# ------------------------------------------------------------------ delivery


def test_salvusctl_message_reaches_browsers_on_every_frontend(appliance, browsers):
    data, base = appliance
    alice = browsers(base, "alice")  # web0
    bob = browsers(base + 1, "bob")  # web1
    carol = browsers(base + 1, "carol")
    sent = run(data, "message", "--to", "all", "Maintenance at 22:00; save your work.")
    assert sent.stdout.splitlines()[0] == "delivered to 3 browser(s) (web0 1, web1 2)"
    for browser in (alice, bob, carol):
        shown = announcements(browser, 1)[0]
        assert (shown["text"], shown["from"]) == ("Maintenance at 22:00; save your work.",
                                                  "admin")
    sent = run(data, "message", "--to", f"session:{carol.session}", "only carol's session")
    assert sent.stdout.startswith("delivered to 1 browser(s) (web0 0, web1 1)")
    assert announcements(carol, 1)[0]["text"] == "only carol's session"
    sent = run(data, "message", "--to", "browser:alice", "only alice")
    assert sent.stdout.startswith("delivered to 1 browser(s) (web0 1, web1 0)")
    assert announcements(alice, 1)[0]["text"] == "only alice"
    bob.send(type="ping")  # nothing else reached bob meanwhile
    assert bob.receive(5)["type"] == "pong"
    refused = run(data, "message", "--to", "planet:mars", "hi", check=False)
    assert refused.returncode == 2 and "write all, browser:ID" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_frontends_python_api_reaches_a_browser_on_another(appliance, browsers):
    """A third frontend (here, in this process) joins through the watched
    frontends file and sends with Bus.message; the browser is on web1."""
    data, base = appliance
    dave = browsers(base + 1, "dave")
    frontends_file = data / "etc" / "frontends.json"
    original = frontends_file.read_text()
    directory = json.loads(original)
    pair = curve.load_pair(data / "secrets" / "curve" / "web.key_secret")
    port = base + 450
    directory["frontends"].append({"name": "webX", "bus": f"tcp://127.0.0.1:{port}",
                                   "key": pair.public.decode(), "http": ""})
    peer = bus.Bus("webX", pair, {pair.public}, f"tcp://127.0.0.1:{port}", frontends_file,
                   deliver=lambda message: 0, say=lambda line: None)
    try:
        frontends_file.write_text(json.dumps(directory))
        peer.start()
        with gevent.Timeout(20):
            while set(peer.live_peers()) != {"web0", "web1"}:
                gevent.sleep(0.1)
            gevent.sleep(1.5)  # web0 and web1 re-read the file and subscribe to us
            delivery = peer.message("browser", "dave", "hello from webX")
            assert delivery.answered.wait(5)
        assert delivery.counts == {"webX": 0, "web0": 0, "web1": 1}
        shown = announcements(dave, 1)[0]
        assert (shown["text"], shown["from"]) == ("hello from webX", "webX")
    finally:
        frontends_file.write_text(original)
        peer.close()


def test_a_peer_with_an_unknown_key_gets_nothing(appliance, make_folder):
    data, base = appliance
    endpoint = f"tcp://127.0.0.1:{base + 401}"  # web0's publisher
    pair = curve.load_pair(data / "secrets" / "curve" / "web.key_secret")
    public, _ = zmq.auth.create_certificates(make_folder("salvus-stranger-"), "stranger")
    stranger_pair = curve.load_pair(Path(public).with_suffix(".key_secret"))
    context = zmq.Context()
    sockets = []
    try:
        for key in (pair, stranger_pair):
            sock = context.socket(zmq.SUB)
            sock.linger = 0
            curve.connect_as(sock, key, pair.public)
            sock.setsockopt(zmq.SUBSCRIBE, b"")
            sock.connect(endpoint)
            sockets.append(sock)
        ours, stranger = sockets
        assert ours.poll(5000), "the frontend's own key got no beat"
        assert bus.decode(ours.recv_multipart())[0] == b"beat"
        for _ in range(3):  # three more beats go out; none reaches the stranger
            assert ours.poll(5000)
            ours.recv_multipart()
        assert not stranger.poll(0)
        plain = context.socket(zmq.SUB)  # no CURVE at all
        plain.linger = 0
        sockets.append(plain)
        plain.setsockopt(zmq.SUBSCRIBE, b"")
        plain.connect(endpoint)
        assert not plain.poll(2500)
    finally:
        for sock in sockets:
            sock.close(linger=0)
        context.term()
    wait_for(lambda: "refused a subscriber with an unknown key" in
             (data / "logs" / "web0.log").read_text(), 10, what="the refusal in web0's log")


# ------------------------------------------------------------------ browsers table


def test_the_browsers_table_follows_websockets_and_is_repaired(appliance, browsers):
    data, base = appliance
    erin = browsers(base, "erin")
    frank = browsers(base + 1, "frank")
    web1 = running_pid(data, "web1")
    wait_for(lambda: rows(data) == [("erin", erin.session, "web0", running_pid(data, "web0")),
                                    ("frank", frank.session, "web1", web1)], 10,
             what="a row per websocket")
    erin.close()
    wait_for(lambda: [r[0] for r in rows(data)] == ["frank"], 10, what="erin's row gone")
    run(data, "stop", "registry")  # from here only the frontend or check may repair
    try:
        # Killed, restarted by supervisord: the new web1 clears what the old one left.
        os.kill(web1, signal.SIGKILL)
        wait_for(lambda: running_pid(data, "web1") not in (0, web1), 30, what="web1 restarted")
        wait_for(lambda: rows(data) == [], 10, what="web1's old rows cleared by web1")
        # Killed for good (stopped while frozen: SIGKILL after the grace), with
        # no listener: check clears its rows.
        assert browsers(base + 1, "grace").session
        web1 = running_pid(data, "web1")
        wait_for(lambda: [r[0] for r in rows(data)] == ["grace"], 10, what="grace's row")
        os.kill(web1, signal.SIGSTOP)
        run(data, "stop", "web1", timeout=60)
        assert [r[0] for r in rows(data)] == ["grace"]
        checked = run(data, "check", check=False)
        assert f"repaired browsers: removed 1 row(s) of web1 pid {web1}, which no longer " \
               "runs" in checked.stdout
        assert rows(data) == []
        # With the listener running, supervisord's report of the end clears them.
        run(data, "start", "registry", "web1")
        henry = browsers(base + 1, "henry")
        web1 = running_pid(data, "web1")
        wait_for(lambda: [r[0] for r in rows(data)] == ["henry"], 10, what="henry's row")
        os.kill(web1, signal.SIGSTOP)
        run(data, "stop", "web1", timeout=60)
        wait_for(lambda: rows(data) == [], 10, what="the listener clearing web1's rows")
        assert henry.session  # (its websocket died with web1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(web1, signal.SIGCONT)
        run(data, "start", check=False, timeout=120)
