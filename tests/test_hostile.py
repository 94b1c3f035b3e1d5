"""Hostile code and chaos against a real appliance (supervisord, PostgreSQL,
memcached, two workers, a frontend), with a canary running ``1+1`` through the
API every second from an address of its own. Each test attacks, then asserts
containment (the attack ends as a limit says, nobody else notices) and
recovery (the canary answers right again, every program runs); the canary's
figures are printed, never asserted: these machines are shared and noisy.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg2
import pytest

from tests import chaos, db
from tests.chaos import (
    Canary,
    execute,
    get,
    pid_of,
    post,
    signal_family,
)
from tests.helpers import edit_config, run, wait_for
from tests.web_client import Browserish, Frontend, handshake

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="isolation full needs root")]
PROGRAMS = ("postgres", "memcached", "registry", "shipper", "worker0", "worker1", "web0")


@pytest.fixture(scope="module")
def appliance():
    with chaos.appliance() as started:
        yield started


@pytest.fixture
def canary(appliance):
    _, port = appliance
    watcher = Canary(port)
    yield watcher
    watcher.stopping.set()


def all_running(data: Path) -> bool:
    rows = json.loads(run(data, "status", "--json", check=False).stdout)
    return all(row["state"] == "RUNNING" for row in rows)


# ------------------------------------------------------------ code that attacks


ATTACKS = {
    "fork bomb": ("import os, time\nwhile True:\n    if os.fork() == 0:\n"
                  "        time.sleep(100)\n        os._exit(0)", "limit"),
    "memory bomb": ("blocks = []\nwhile True: blocks.append(bytearray(64 << 20))", "limit"),
    "cpu burn": ("while True: pass", "timeout"),
    "infinite output": ("while True: print('x' * 999)", "limit"),
    "output cap lifted": ("import sys\nsys.stdout._stream.cap = 10**15\n"
                          "while True: print('x' * 999)", "limit"),
    "forged channel message": ("import sys\nsend = sys.stdout._stream._send\n"
                               "send({'type': 'image', 'mime': 'text/html', 'size': 6,"
                               " 'sha1': 'a' * 40}, b'<html>')\n"
                               "send({'type': 'result', 'data': 5})\n"
                               "send({'type': 'stream', 'name': 'stdout', 'text': [1]})\n"
                               "print('after')", "ok"),
}


@pytest.mark.parametrize("name", ATTACKS)
def test_an_attack_from_a_session_is_contained(appliance, canary, name):
    data, port = appliance
    code, status = ATTACKS[name]
    canary.start(name)
    got, answer = execute(port, code, timeout=8)
    assert got == 200 and answer["status"] == status, answer
    figures = canary.stop()
    assert figures.failures == 0
    ok, health = get(port, "/health")[:2]
    assert ok == 200 and json.loads(health)["workers"] == 2
    assert all_running(data)


def test_a_session_reads_nothing_of_the_appliance(appliance):
    data, port = appliance
    probe = ("import os\nfound = {}\n"
             f"for path in {[str(data / 'salvus.conf'), str(data / 'secrets' / 'dsn'), str(data / 'logs')]!r}:\n"  # noqa: E501
             "    try:\n        found[path] = bool(open(path).read(1))\n"
             "    except Exception as exc:\n        found[path] = type(exc).__name__\n"
             "found['procs'] = sorted(p for p in os.listdir('/proc') if p.isdigit())\n"
             "try:\n    os.kill(1, 9)\n    found['init'] = 'alive' \n"
             "except Exception as exc:\n    found['init'] = type(exc).__name__\n"
             "found")
    got, answer = execute(port, probe)
    assert got == 200, answer
    found = eval(answer["result"]["text/plain"])
    assert all(found[path] in ("FileNotFoundError", "PermissionError", "IsADirectoryError",
                               "NotADirectoryError")
               for path in found if path.startswith("/")), found
    assert found["procs"] == ["1", "2"]


# ------------------------------------------------------------ chaos


@pytest.mark.parametrize("name", PROGRAMS)
def test_kill_9_of_a_program_is_survived(appliance, canary, name):
    data, _ = appliance
    canary.start(f"kill -9 {name}")
    old = pid_of(data, name, run)
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: all_running(data) and pid_of(data, name, run) != old, timeout=90,
             what=f"{name} back under a new pid")
    assert canary.recovered(), "the canary did not recover"
    canary.stop()


def test_a_stopped_worker_is_given_up_and_its_sessions_come_back_with_it(appliance,
                                                                       canary):
    """SIGSTOP: the frontend gives worker0 up and says so; its sessions live in
    worker0, so when it is back each page finds its session, variables and all."""
    data, port = appliance
    worker = pid_of(data, "worker0", run)
    held = [Browserish(Frontend(port), f"browser={uuid.uuid4().hex}") for _ in range(4)]
    try:
        for i, browser in enumerate(held):
            browser.open()
            assert browser.run(f"c{i}", f"x = {i}")[-1]["status"] == "ok"
        on_worker0 = sessions_on(data, 0)
        canary.start("SIGSTOP worker0 until given up")
        os.kill(worker, signal.SIGSTOP)
        try:
            wait_for(lambda: live_workers(port) == 1, timeout=30, what="worker0 given up")
        finally:
            os.kill(worker, signal.SIGCONT)
        # back: its pages' next runs find their sessions there (a run before the
        # frontend hears it again starts anew, as the page was told it would)
        wait_for(lambda: live_workers(port) == 2, timeout=30, what="worker0 back")
        assert canary.recovered()
        canary.stop()
        for i, browser in enumerate(held):  # each page goes on where it was
            again = browser.run(f"again{i}", "x", timeout=60)
            assert again[-1]["status"] == "ok", again
            assert [m["data"]["text/plain"] for m in again if m["type"] == "result"] == [str(i)]
        assert sessions_on(data, 0) == on_worker0  # none ended, none started anew there
    finally:
        for browser in held:
            browser.close()


def live_workers(port: int) -> int:
    return json.loads(get(port, "/health")[1])["workers"]


def sessions_on(data: Path, index: int) -> int:
    from sage_worker import curve
    from salvusctl.config import load
    from salvusctl.probe import ping_worker

    keys = data / "secrets" / "curve"
    port = load(data / "salvus.conf").get("worker", "port") + index
    pong = ping_worker(f"tcp://127.0.0.1:{port}", curve.load_public(keys / "worker.key"),
                       curve.load_pair(keys / "web.key_secret"), timeout=10)
    return pong["sessions"]


@pytest.mark.parametrize("how", ["SIGSTOP", "stop"])
def test_a_database_that_hangs_or_stops_never_hangs_the_frontend(appliance, canary, how):
    data, port = appliance
    # a link never opened yet: not in memcached, which would serve it anyway
    status, shared, _ = post(port, "/api/share", {"cells": [{"code": f"1 # {how}"}]})
    assert status == 200
    canary.start(f"PostgreSQL {'SIGSTOPped' if how == 'SIGSTOP' else 'stopped'}")
    database = pid_of(data, "postgres", run)
    if how == "SIGSTOP":  # the server and every backend
        signal_family(database, signal.SIGSTOP)
    else:
        run(data, "stop", "postgres")
    try:
        for request in (lambda: post(port, "/api/share",
                                     {"cells": [{"code": f"2 # {how}"}]})[:2],
                        lambda: get(port, shared["url"])[:2],
                        lambda: get(port, "/blobs/" + "b" * 40)[:2]):
            start = time.monotonic()
            code, body = request()
            assert code == 503, body
            assert time.monotonic() - start < 10
        # a plot: the cell runs, its image is a notice until the database is back
        got, answer = execute(port, "import matplotlib.pyplot as plt\nplt.plot([1, 2])")
        assert got == 200 and answer["status"] == "ok"
        assert any("database" in notice for notice in answer["notices"])
    finally:
        if how == "SIGSTOP":
            signal_family(database, signal.SIGCONT)
        else:
            run(data, "start", "postgres")
    figures = canary.stop()
    assert figures.failures == 0  # cells never needed the database
    wait_for(lambda: post(port, "/api/share", {"cells": [{"code": "3"}]})[0] == 200,
             timeout=30, what="sharing to work again")
    assert get(port, shared["url"])[0] == 200


# ------------------------------------------------------------ quotas


def test_forty_slow_api_calls_do_not_starve_the_worksheet(appliance):
    import concurrent.futures

    _, port = appliance
    slow = {"code": "import time\ntime.sleep(4)", "timeout": 8}
    sources = [f"127.0.1.{i}" for i in range(1, 41)]
    with concurrent.futures.ThreadPoolExecutor(40) as pool:
        calls = [pool.submit(post, port, "/api/execute", slow, source) for source in sources]
        time.sleep(0.5)  # let them arrive first: the worksheet comes after all of them
        page = Browserish(Frontend(port), f"browser={uuid.uuid4().hex}")
        try:
            page.open()
            assert page.run("c", "6 * 7", timeout=15)[-1]["status"] == "ok"
        finally:
            page.close()
        answers = [call.result() for call in calls]
    refused = [a for a in answers if a[0] == 429]
    assert len(refused) >= 30  # the API's share: 4 at once on this frontend
    assert all(int(headers["Retry-After"]) > 0 and body["error"]
               for _, body, headers in refused)
    assert all(status in (200, 429) for status, _, _ in answers)


def test_the_per_ip_rate_limit_triggers_then_releases(appliance):
    _, port = appliance
    source = "127.0.2.1"
    statuses = []  # the limit is 50 a second: a few hundred in a row must pass it,
    while 429 not in statuses and len(statuses) < 400:  # however slow the machine
        statuses.append(post(port, "/api/execute", {"code": ""}, source)[0])
    assert 429 in statuses and 400 in statuses  # within the limit: answered on its merits
    status, body, headers = post(port, "/api/execute", {"code": ""}, source)
    if status == 429:
        assert headers["Retry-After"] and "too many requests" in body["error"]
    wait_for(lambda: post(port, "/api/execute", {"code": ""}, source)[0] == 400,
             timeout=5, what="the window to pass")


def test_a_class_behind_one_address_gets_its_sessions_and_closed_tabs_free_theirs(appliance):
    _, port = appliance
    pages = []
    before = health_sessions(port)
    try:
        for _ in range(100):  # a class of 100, one tab each, all from 127.0.0.1
            page = Browserish(Frontend(port), f"browser={uuid.uuid4().hex}")
            pages.append(page)
            assert page.open()["type"] == "attached"
        for page in pages[:50]:  # half of them close their tab
            page.send(type="leave")
            page.close()
        wait_for(lambda: health_sessions(port) == before + 50, timeout=30,
                 what="the closed tabs' sessions to end")
    finally:
        for page in pages:
            page.close()


def test_a_closed_tab_frees_its_place_at_once(appliance):
    _, port = appliance
    cookie = f"browser={uuid.uuid4().hex}"
    pages = [Browserish(Frontend(port), cookie) for _ in range(11)]
    try:
        for page in pages[:10]:  # the limit per browser
            assert page.open()["type"] == "attached"
        assert pages[10].open()["code"] == "quota"
        pages[0].send(type="leave")
        pages[0].close()
        again = Browserish(Frontend(port), cookie)
        pages.append(again)
        wait_for(lambda: again.open()["type"] == "attached", timeout=5,
                 what="the closed tab's place")
    finally:
        for page in pages:
            page.close()


def health_sessions(port: int) -> int:
    return json.loads(get(port, "/health")[1])["sessions"]


# ------------------------------------------------------------ what a browser sends


@pytest.mark.parametrize("origin", ["http://evil.example", "null"])
def test_other_sites_cannot_run_code_through_a_browser(appliance, origin):
    _, port = appliance
    status, body, _ = post(port, "/api/execute", b"code=1%2B1", headers={
        "Origin": origin, "Content-Type": "application/x-www-form-urlencoded"})
    assert status == 403 and "other sites" in body["error"]
    status, body, _ = post(port, "/api/share", {"cells": [{"code": "1"}]},
                           headers={"Origin": origin})
    assert status == 403
    assert websocket_handshake(port, origin) == 403
    # our own page, and a script without a browser, are served
    assert post(port, "/api/execute", {"code": "1+1"},
                headers={"Origin": f"http://127.0.0.1:{port}"})[0] == 200
    assert post(port, "/api/execute", {"code": "1+1"})[0] == 200


def websocket_handshake(port: int, origin: str) -> int:
    """The status a browser's websocket handshake from ``origin`` gets."""
    return handshake(port, {"Origin": origin})


def test_every_page_carries_the_security_headers(appliance):
    _, port = appliance
    for path in ("/", "/s/nosuchlinkhere", "/health", "/static/app.js"):
        _, _, headers = get(port, path)
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Referrer-Policy"] == "same-origin"


@pytest.mark.parametrize("mime", ["text/html", "image/png\r\nSet-Cookie: stolen=1"])
def test_blobs_are_served_only_as_images(appliance, mime):
    data, port = appliance
    sha1 = uuid.uuid4().hex + "00000000"
    db.query(data, "INSERT INTO blobs (sha1, mime, data) VALUES (%s, %s, %s)",
             (sha1, mime, psycopg2.Binary(b"<script>alert(1)</script>")))
    status, _, headers = get(port, f"/blobs/{sha1}")
    assert status == 200
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["Content-Disposition"] == "attachment"
    assert "Set-Cookie" not in headers and "sandbox" in headers["Content-Security-Policy"]


def test_a_shared_page_embeds_hostile_cells_as_inert_data(appliance):
    _, port = appliance
    hostile = "</script><script>alert(1)</script><!--<script>x='&'"
    status, shared, _ = post(port, "/api/share", {"cells": [{"code": hostile}]})
    assert status == 200
    page = get(port, shared["url"])[1].decode()
    embedded = page.split('<script id="shared" type="application/json">')[1]
    data, _, rest = embedded.partition("</script>")
    assert "<" not in data and ">" not in data and "&" not in data
    assert json.loads(data)["cells"][0]["code"] == hostile
    assert rest.count("<script") == page.count("<script src=")  # only ours


# ------------------------------------------------------------ bad input


NESTED = b"[" * 200000 + b"]" * 200000


@pytest.mark.parametrize("body, words", [
    (NESTED, "nested too deeply"),
    (b'{"code": "1", "timeout": true}', "timeout"),
    (b'{"code": "1", "timeout": "soon"}', "timeout"),
    (b'{"code": "1", "timeout": 1e999}', "timeout"),
    (b'{"code": ["1"]}', "code"),
    (b'{"code": "1", "engine": {"x": 1}}', "engine"),
    (b'"just a string"', "code"),
])
def test_bad_api_input_gets_a_one_line_4xx(appliance, body, words):
    _, port = appliance
    status, answer, _ = post(port, "/api/execute", body, source="127.0.3.1")
    assert 400 <= status < 500 and words in answer["error"], answer
    assert "\n" not in answer["error"]


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/api/execute", 405), ("GET", "/api/nothing", 404),
])
def test_the_api_answers_json_even_for_wrong_methods_and_paths(appliance, method, path,
                                                              status):
    _, port = appliance
    got, body, headers = get(port, path)
    assert got == status and headers["Content-Type"] == "application/json"
    assert json.loads(body)["error"]


@pytest.mark.parametrize("frame, code", [
    ("[" * 200000 + "]" * 200000, "malformed"),
    ('{"type": "interact", "cell": "c", "interact": "i", "values": {"a": [[[1]]]}}',
     "bad_field"),
    ('{"type": "open", "last_seq": "7"}', "bad_field"),
])
def test_bad_websocket_frames_get_protocol_errors_and_the_connection_stays(appliance,
                                                                          frame, code):
    _, port = appliance
    page = Browserish(Frontend(port), f"browser={uuid.uuid4().hex}")
    try:
        page.open()
        page.send_raw(frame)
        assert page.receive()["code"] == code
        assert page.run("c", "1+1")[-1]["status"] == "ok"
    finally:
        page.close()


# ------------------------------------------------------------ what salvusctl says


def test_applying_a_config_change_never_leaves_a_running_program_stopped(appliance):
    data, _ = appliance
    edit_config(data, {("worker", "wall_time"): "11"})
    result = run(data, "start", "postgres")
    assert "worker0: configuration reloaded, restarting it" in result.stdout
    assert run(data, "status").returncode == 0
    assert "Salvus is running" in result.stdout


def test_isolation_that_cannot_be_applied_is_reported_by_start_and_check(appliance):
    data, port = appliance
    edit_config(data, {("worker", "sessions_dir"): "/proc/no-such-place"})
    try:
        result = run(data, "start", check=False)
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
        assert result.returncode == 10 and len(errors) == 1, result.stderr
        assert "sessions cannot be isolated" in errors[0] and "isolation = none" in errors[0]
        check = run(data, "check", check=False)
        assert check.returncode == 10
        assert "problem: worker" in check.stdout and "isolated" in check.stdout
        assert run(data, "status", check=False).returncode == 3
    finally:
        edit_config(data, {("worker", "sessions_dir"): ""})
        run(data, "start")
    assert all_running(data)
    assert execute(port, "1+1")[1]["status"] == "ok"


def test_only_our_programs_talk_to_a_worker(appliance):
    import zmq

    from sage_worker import protocol
    from salvusctl.config import load

    data, _ = appliance
    port = load(data / "salvus.conf").get("worker", "port")
    context = zmq.Context()
    plain = context.socket(zmq.DEALER)
    plain.linger = 0
    plain.sndtimeo = 1000
    try:
        plain.connect(f"tcp://127.0.0.1:{port}")
        plain.send_multipart(protocol.request("start", "intruder"))
        assert not plain.poll(3000), "a client without a key got an answer"
    finally:
        plain.close(linger=0)
        context.term()
    assert isinstance(sessions_on(data, 0), int)  # ours are still answered


def test_a_local_user_reaches_neither_memcached_nor_the_uid_registry_lock(appliance):
    data, _ = appliance
    probe = ("import socket, sys\nfound = []\ns = socket.socket(socket.AF_UNIX)\n"
             "try:\n    s.connect(sys.argv[1])\n    found.append('memcached')\n"
             "except OSError as exc:\n    found.append(type(exc).__name__)\n"
             "try:\n    open(sys.argv[2], 'a')\n    found.append('lock')\n"
             "except OSError as exc:\n    found.append(type(exc).__name__)\n"
             "print(found)")
    socket_path = data / "var" / "memcached.sock"
    assert socket_path.is_socket()  # it is there, and used: the frontends cache through it
    done = subprocess.run([sys.executable, "-c", probe, str(socket_path),
                           "/var/lib/salvus/uid-ranges.lock"], user=65534,
                          capture_output=True, text=True, timeout=30)
    assert done.stdout.strip() == "['PermissionError', 'PermissionError']", done.stderr
    assert stat.S_IMODE(socket_path.stat().st_mode) & 0o077 == 0  # even were var/ opened
    from salvusctl.config import load

    port = load(data / "salvus.conf").get("memcached", "port")
    with pytest.raises(ConnectionRefusedError):  # and nothing listens on TCP
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
