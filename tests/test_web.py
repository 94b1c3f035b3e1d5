"""A real frontend with real workers and PostgreSQL, spoken to over websockets."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import psycopg2
import pytest

from sage_worker import protocol
from tests.helpers import kill_everything_of, wait_for
from tests.web_client import Browserish, WebProcess
from tests.worker_client import WorkerProcess, make_keys

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def web_db(migrated_db):
    return migrated_db


@pytest.fixture(scope="module")
def stack(web_db):
    folder = Path(tempfile.mkdtemp(prefix="salvus-web-", dir="/tmp"))
    os.chmod(folder, 0o755)
    workers = []
    web = None
    try:
        keys = make_keys(folder / "keys")
        for i in range(2):
            worker = WorkerProcess(folder / f"w{i}", "python", keys=keys)
            workers.append(worker)
        for worker in workers:
            worker.wait_ready()
        web = WebProcess(folder / "web", [(f"w{i}", w.endpoint) for i, w in enumerate(workers)],
                         web_db, "--sessions-per-browser", "3", keys=keys)
        web.wait_ready()
        yield web, workers
    finally:
        if web:
            web.stop()
        for worker in workers:
            worker.stop()
        kill_everything_of(folder)
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def browser(stack):
    web, _ = stack
    opened = []

    def make(cookie: str | None = None) -> Browserish:
        client = Browserish(web, cookie or f"browser={uuid.uuid4().hex}")
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.close()


def test_execute_round_trip(browser):
    b = browser()
    attached = b.open()
    assert attached["type"] == "attached" and attached["cells"] == []
    messages = b.run("c1", "2+2")
    assert [m["type"] for m in messages] == ["queued", "running", "result", "done"]
    assert messages[2]["data"]["text/plain"] == "4"
    assert messages[-1]["status"] == "ok"
    seqs = [m["seq"] for m in messages]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_ten_thousand_lines_twenty_times(browser):
    b = browser()
    b.open()
    for i in range(20):
        messages = b.run(f"c{i}", "for i in range(10**4): print(i)")
        text = "".join(m["text"] for m in messages if m["type"] == "stream")
        assert text.endswith("9999\n") and text.count("\n") == 10**4
        assert messages[-1]["type"] == "done" and messages[-1]["status"] == "ok"


def test_images_are_blobs_available_the_moment_they_are_announced(stack, browser):
    web, _ = stack
    b = browser()
    b.open()
    b.send(type="execute", cell="p", code="import matplotlib.pyplot as plt\nplt.plot([1,2,1])")
    while True:
        message = b.receive()
        if message["type"] == "image":
            with urllib.request.urlopen(web.url + message["url"], timeout=5) as response:
                assert response.status == 200
                assert response.headers["Content-Type"].split(";")[0] == message["mime"] \
                    == "image/svg+xml"
                assert "immutable" in response.headers["Cache-Control"]
                assert "default-src 'none'" in response.headers["Content-Security-Policy"]
                assert b"<svg" in response.read()[:400]
            break
    assert b.until_done("p")[-1]["status"] == "ok"


@pytest.mark.parametrize("frame, code", [
    ("not json", "malformed"), ('{"type": "fly"}', "unknown_type"),
    ('{"type": "execute", "cell": "c"}', "bad_field"), (b"\x00binary", "malformed"),
    ("x" * (2 << 20), "too_large"),
])
def test_bad_frames_get_an_error_and_the_connection_stays(browser, frame, code):
    b = browser()
    b.open()
    b.send_raw(frame)
    reply = b.receive()
    assert reply == {"type": "protocol_error", "code": code, "message": reply["message"]}
    assert b.run("ok", "1+1")[-1]["status"] == "ok"


def test_execute_before_open_is_refused(browser):
    b = browser()
    b.send(type="execute", cell="c", code="1")
    assert b.receive()["code"] == "no_session"


def test_resume_after_a_dropped_connection_loses_nothing(stack, browser):
    web, _ = stack
    first = browser("browser=resume")
    session = first.open()["session"]
    first.send(type="execute", cell="slow", code="import time\n"
               "for i in range(30):\n    print(i)\n    time.sleep(0.05)")
    while first.last_seq < 4:
        first.receive()
    seen = first.last_seq
    first.close()
    time.sleep(0.5)  # output goes on while nobody listens
    second = Browserish(web, "browser=resume")
    assert second.open(session, last_seq=seen)["session"] == session
    messages = second.until_done("slow")
    assert messages[0]["seq"] == seen + 1
    seqs = [m["seq"] for m in messages]
    assert seqs == list(range(seen + 1, seen + 1 + len(seqs)))
    second.close()


def test_reload_gets_the_cells_and_all_output(browser):
    b = browser("browser=reloads")
    session = b.open()["session"]
    b.run("a", "print('hello')\n6*7")
    again = browser("browser=reloads")
    attached = again.open(session, last_seq=0)
    replay = again.until_done("a")
    assert attached["cells"] == [{"cell": "a", "code": "print('hello')\n6*7",
                                  "execution": replay[0]["execution"], "state": "done",
                                  "status": "ok"}]
    assert [m["type"] for m in replay] == ["queued", "running", "stream", "result", "done"]


def test_quota_per_browser(browser):
    cookie = f"browser={uuid.uuid4().hex}"
    for _ in range(3):
        assert browser(cookie).open()["type"] == "attached"
    refused = browser(cookie).open()
    assert refused["type"] == "protocol_error" and refused["code"] == "quota"


def test_over_the_limit_a_page_learns_its_sessions_and_may_close_one(browser):
    cookie = f"browser={uuid.uuid4().hex}"
    pages = [browser(cookie) for _ in range(3)]
    held = [page.open()["session"] for page in pages]
    extra = browser(cookie)
    refused = extra.open()
    assert refused["code"] == "quota" and refused["limit"] == 3
    assert sorted(s["session"] for s in refused["sessions"]) == sorted(held)
    assert all(s["attached"] for s in refused["sessions"])
    stranger = browser(f"browser={uuid.uuid4().hex}")
    stranger.open()
    stranger.send(type="close", session=held[0])  # not its own: nothing happens
    extra.send(type="close", session=held[1])
    told = pages[1].receive(10)
    assert told["type"] == "session_status" and "closed from another tab" in told["reason"]
    assert extra.open()["type"] == "attached"  # room again
    assert pages[0].run("a", "1 + 1")[-1]["status"] == "ok"  # the stranger closed nothing


def sessions_on(worker: WorkerProcess) -> int:
    return worker.client().request("ping")["sessions"]


def test_worker_killed_ends_the_cell_with_a_notice_then_runs_on_a_live_worker(stack, browser):
    web, workers = stack
    b = browser()
    b.open()
    before = [sessions_on(w) for w in workers]
    b.run("w", "1")
    victim, survivor = sorted(workers, key=lambda w: before[workers.index(w)] - sessions_on(w))
    b.send(type="execute", cell="long", code="import time\ntime.sleep(60)")
    time.sleep(0.5)
    os.kill(victim.proc.pid, signal.SIGKILL)
    messages = b.until_done("long", timeout=15)
    assert any(m["type"] == "notice" and "stopped" in m["text"] for m in messages)
    assert messages[-1]["status"] == "killed"
    on_survivor = sessions_on(survivor)
    after = b.run("again", "1")
    assert after[-1]["status"] == "ok"
    assert sessions_on(survivor) == on_survivor + 1  # a fresh session, on the live worker
    # leave the module's stack whole for the tests after this one
    victim.proc.wait()
    victim.stop()  # closes its sockets and context
    replacement = WorkerProcess(victim.folder.parent / "w-new", "python", keys=victim.keys)
    replacement.wait_ready()
    workers[workers.index(victim)] = replacement
    web.write_workers([(f"n{i}", w.endpoint) for i, w in enumerate(workers)])
    wait_for(lambda: web.health()[1]["workers"] == 2, timeout=10, what="both workers live")


def test_workers_file_changes_apply_without_restart(stack):
    web, workers = stack
    web.write_workers([("only", workers[0].endpoint)])
    wait_for(lambda: web.health()[1]["workers"] == 1, timeout=10, what="one worker")
    web.write_workers([])
    wait_for(lambda: web.health()[0] == 503, timeout=10, what="no worker -> 503")
    b = Browserish(web, "browser=none")
    b.open()
    messages = b.run("x", "1")
    assert messages[-1]["status"] == "killed"
    assert "No compute worker" in next(m["text"] for m in messages if m["type"] == "notice")
    b.close()
    web.write_workers([(f"w{i}", w.endpoint) for i, w in enumerate(workers)])
    wait_for(lambda: web.health()[1]["workers"] == 2, timeout=10, what="two workers again")


def post(web: WebProcess, body: bytes, content_type: str = "application/json"):
    request = urllib.request.Request(web.url + "/api/execute", data=body, method="POST",
                                     headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_api_runs_code_and_answers_json(stack):
    web, _ = stack
    status, answer = post(web, json.dumps({"code": "print('hi')\n6*7"}).encode())
    assert status == 200
    assert answer["status"] == "ok" and answer["stdout"] == "hi\n"
    assert answer["result"]["text/plain"] == "42" and answer["error"] is None


def test_api_takes_a_form_field_as_curl_sends_it(stack):
    web, _ = stack
    body = urllib.parse.urlencode({"code": "1/0"}).encode()
    status, answer = post(web, body, "application/x-www-form-urlencoded")
    assert status == 200 and answer["status"] == "error"
    assert answer["error"]["ename"] == "ZeroDivisionError"


def test_api_images_are_urls_that_load(stack):
    web, _ = stack
    status, answer = post(web, json.dumps(
        {"code": "import matplotlib.pyplot as plt\nplt.plot([1, 2])"}).encode())
    assert status == 200 and len(answer["images"]) == 1
    with urllib.request.urlopen(web.url + answer["images"][0]["url"], timeout=5) as response:
        assert b"<svg" in response.read()[:400]


def test_api_timeout_stops_the_code(stack):
    web, _ = stack
    status, answer = post(web, json.dumps({"code": "import time\ntime.sleep(100)",
                                           "timeout": 1}).encode())
    assert status == 200 and answer["status"] == "timeout"
    assert "1 s time limit" in " ".join(answer["notices"])


@pytest.mark.parametrize("body, status, words", [
    (json.dumps({"code": "x" * (70 << 10)}).encode(), 413, "limit"),
    (b"x" * (3 << 20), 413, "request body"),
    (b"{not json", 400, "code"),
    (json.dumps({"code": ""}).encode(), 400, "code"),
    (json.dumps({"code": "1", "engine": "fortran"}).encode(), 400, "engine"),
    (json.dumps({"code": "1", "timeout": 3600}).encode(), 400, "timeout"),
])
def test_api_refuses_bad_requests_clearly(stack, body, status, words):
    web, _ = stack
    got, answer = post(web, body)
    assert got == status and words in answer["error"]


def share(web: WebProcess, content) -> tuple[int, dict]:
    request = urllib.request.Request(web.url + "/api/share", method="POST",
                                     data=json.dumps(content).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_share_stores_cells_under_a_short_random_id(stack, web_db):
    web, _ = stack
    cells = {"cells": [{"code": "x = 2"}, {"code": "x^10 </script>"}]}
    status, first = share(web, cells)
    assert status == 200 and first["url"] == f"/s/{first['id']}"
    assert len(first["id"]) >= 6 and first["id"].isalpha()
    assert share(web, cells)[1]["id"] == first["id"]  # identical content, same id
    other = share(web, {"cells": [{"code": "y = 3"}]})[1]["id"]
    assert other != first["id"]
    for _ in range(2):
        with urllib.request.urlopen(web.url + first["url"], timeout=5) as response:
            page = response.read().decode()
    assert '"x^10 \\u003c/script\\u003e"' in page and "<!--SHARED-->" not in page
    conn = psycopg2.connect(web_db)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT opened, last_opened IS NOT NULL FROM short_urls WHERE id = %s",
                    (first["id"],))
        assert cur.fetchone() == (2, True)
    conn.close()


@pytest.mark.parametrize("content, status", [
    ({"cells": []}, 400), ({"cells": [{"code": 5}]}, 400), ({"nope": 1}, 400),
    ({"cells": [{"code": "x" * (300 << 10)}]}, 413),
    ({"cells": [{"code": "1", "interacts": [{"n": float("nan")}]}]}, 400),
    ({"cells": [{"code": "1", "interacts": [{"n": float("inf")}]}]}, 400),
])
def test_share_refuses_bad_content(stack, content, status):
    web, _ = stack
    got, body = share(web, content)
    assert got == status and body["error"]


@pytest.mark.parametrize("path", ["/s/abcdefgh", "/s/x", "/s/abc123def"])
def test_unknown_links_get_a_friendly_404(stack, path):
    web, _ = stack
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(web.url + path, timeout=5)
    assert caught.value.code == 404
    assert "This link leads nowhere" in caught.value.read().decode()


class RogueWorker:
    """A peer with the workers' key that speaks the worker protocol's framing
    but sends, for every execute, what no honest worker would: broken frames,
    wrong types, a page as an 'image', JSON nested past any parser's depth;
    then one honest done. Real ZeroMQ sockets, in a thread of the test.
    ``honest``: no garbage; ``ignored``: the kinds of request it leaves
    unanswered now (a worker stopped, or with a backlog)."""

    def __init__(self, keys, honest: bool = False):
        import threading

        import zmq

        from sage_worker import curve

        self.context = zmq.Context()
        self.sock = self.context.socket(zmq.ROUTER)
        self.sock.linger = 0
        curve.serve_as(self.sock, curve.load_pair(keys.server_secret))
        self.zap = self.context.socket(zmq.REP)
        self.zap.linger = 0
        self.zap.bind("inproc://zeromq.zap.01")
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.allowed = curve.load_allowed(keys.clients)
        self.session, self.seq = None, 0
        self.honest = honest
        self.ignored: set[str] = set()
        self.starts = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _garbage(self, session: str, execution: str) -> list[list[bytes]]:
        def out(**fields) -> bytes:
            return json.dumps({"session": session, "execution": execution, "seq": 1,
                               **fields}).encode()

        tag = protocol.TAG
        return [
            [tag], [b"bogus", b"{}"], [tag, b"\xff\xfe not json"], [tag, b"[1, 2]"],
            [tag, b"[" * 100000 + b"]" * 100000],
            [tag, out(type="stream", name="stdout", text=5)],
            [tag, out(type="result", data="not a dict")],
            [tag, out(type="image", mime="text/html", size=6, sha1="a" * 40), b"<html>"],
            [tag, out(type="image", mime="image/png", size=3, sha1="a" * 40)],
            [tag, out(type="done", status="pwned")],
            [tag, json.dumps({"type": "error", "re": ["x"], "code": 1}).encode()],
            [tag, json.dumps({"type": "pong", "session": {"a": 1}}).encode()],
        ]

    def _serve(self) -> None:
        import zmq

        from sage_worker import curve

        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self.zap, zmq.POLLIN)
        while not self.stop.is_set():
            events = dict(poller.poll(100))
            if self.zap in events:
                curve.answer(self.zap, self.allowed)
            if self.sock not in events:
                continue
            identity, *frames = self.sock.recv_multipart()
            request = protocol.parse_request(frames)
            kind, re = request["type"], request["id"]
            if kind in self.ignored:
                continue
            if kind == "ping":
                reply = protocol.reply("pong", re, name="rogue", engine="python", pid=1,
                                       sessions=0, busy=0, spares=0, load=0.0, limits={})
            elif kind == "start":
                self.session = request.get("session", "s" * 32)
                self.starts += 1
                reply = protocol.reply("started", re, session=self.session, pid=1)
            elif kind == "execute":
                execution, cell = request["execution"], request["cell"]
                for frames in [] if self.honest else self._garbage(self.session, execution):
                    self.sock.send_multipart([identity, *frames])
                self.seq += 1  # then what an honest worker says: queued, done
                self.sock.send_multipart([identity, *protocol.output(
                    "queued", self.session, execution, self.seq, cell=cell, code="1")])
                self.seq += 1
                reply = protocol.output("done", self.session, execution, self.seq,
                                        cell=cell, status="ok")
            elif kind == "replay" and request["session"] != self.session:
                reply = protocol.error(protocol.ProtocolError("no_such_session", "no", re))
            elif kind == "replay":
                reply = protocol.reply("replayed", re, session=self.session, first=1,
                                       last=self.seq, cells=[], owner="")
            else:
                reply = protocol.reply("ok", re)
            self.sock.send_multipart([identity, *reply])

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.sock.close(linger=0)
        self.zap.close(linger=0)
        self.context.term()


@contextlib.contextmanager
def frontend_on(worker_of, web_db, make_folder, name: str):
    """A frontend whose only worker is the stand-in ``worker_of(keys)``, and a
    page open on it: (worker, frontend, page); all closed after."""
    folder = make_folder(f"salvus-{name}-")
    keys = make_keys(folder / "keys")
    worker = worker_of(keys)
    web = WebProcess(folder / "web", [(name, worker.endpoint)], web_db, keys=keys)
    client = None
    try:
        web.wait_ready()
        client = Browserish(web, f"browser={name}")
        client.open()
        yield worker, web, client
    finally:
        if client:
            client.close()
        web.stop()
        worker.close()


def test_a_worker_that_sends_garbage_never_stops_the_frontend(web_db, make_folder):
    with frontend_on(RogueWorker, web_db, make_folder, "rogue") as (_, web, client):
        for i in range(3):  # every round of garbage costs its messages, nothing else
            messages = client.run(f"c{i}", "1")
            assert messages[-1] == {**messages[-1], "type": "done", "status": "ok"}
            assert [m["type"] for m in messages] == ["queued", "done"]
        status, body = web.health()
        assert status == 200 and body["workers"] == 1
        log = web.log.read_text()
        assert "dropped an invalid message" in log and "logged once" in log
        assert "Traceback" not in log


def test_a_session_whose_worker_does_not_answer_yet_is_never_started_anew(web_db, make_folder):
    """A worker back from a stop answers pings before it answers for its
    sessions: a run then is refused with a notice, not started on a fresh
    session that would hide the variables; once it answers, the session goes on."""
    honest = lambda keys: RogueWorker(keys, honest=True)  # noqa: E731
    with frontend_on(honest, web_db, make_folder, "stalled") as (stalled, web, client):
        assert client.run("a", "x = 1")[-1]["status"] == "ok"
        stalled.ignored = {"ping", "replay"}  # stopped: the frontend gives it up
        wait_for(lambda: web.health()[1]["workers"] == 0, timeout=30, what="the give-up")
        stalled.ignored = {"replay"}  # back, with a backlog
        wait_for(lambda: web.health()[1]["workers"] == 1, timeout=30, what="the worker back")
        refused = client.run("b", "x", timeout=40)
        assert refused[-1]["status"] == "killed", refused
        assert any("did not answer in time" in m.get("text", "") for m in refused), refused
        assert stalled.starts == 1  # no fresh session anywhere
        stalled.ignored = set()
        assert client.run("c", "x", timeout=40)[-1]["status"] == "ok"
        assert stalled.starts == 1  # the same session, found again


def frontend_rss_kb(web: WebProcess) -> int:
    status = Path(f"/proc/{web.proc.pid}/status").read_text().splitlines()
    return int(next(line.split()[1] for line in status if line.startswith("VmRSS")))


def test_a_browser_that_does_not_read_costs_bounded_memory_and_is_told_what_it_missed(
        stack):
    from tests.web_client import RawBrowser

    web, workers = stack
    slow = RawBrowser(web.port, f"browser={uuid.uuid4().hex}")
    try:
        slow.send(type="open")
        assert slow.receive()["type"] == "attached"
        before = frontend_rss_kb(web)

        def busy() -> int:
            return sum(w.client().request("ping")["busy"] for w in workers)

        # 4 x 8 x 12 MB of output while the browser reads nothing, all of it
        # pushed at a full socket: a frontend that held it would grow by 384 MB
        # and more. What it holds is bounded (the session's cache, 40 MB; the
        # messages held while a refetch runs; the link's queues), and so is
        # its RSS, though with the allocator's slack: 65-84 MB here after
        # each batch, up to 131 MB seen on a loaded machine after one.
        for batch in range(4):
            for i in range(8):
                slow.send(type="execute", cell=f"c{batch * 8 + i}",
                          code="import sys\nfor i in range(12000): print('y' * 999)")
            wait_for(lambda: busy() > 0, timeout=30, what="the cells to start")
            wait_for(lambda: busy() == 0, timeout=120, what="the cells to finish unread")
        grown = frontend_rss_kb(web) - before
        assert grown < 250_000, f"the frontend grew by {grown} kB for one slow browser"
        seen = []
        while not any(m.get("type") == "done" and m.get("cell") == "c31" for m in seen):
            seen.append(slow.receive())
        gaps = [m for m in seen if m["type"] == "gap"]
        assert gaps and gaps[0]["missed"] > 0 and "could not keep up" in gaps[0]["text"]
        seqs = [m["seq"] for m in seen if "seq" in m]
        assert seqs == sorted(seqs)  # what arrives is in order, without repeats
    finally:
        slow.close()


# ------------------------------------------------------------ found by attacking it


@contextlib.contextmanager
def frontend(stack_or_workers, *extra: str, workers=None):
    """Another frontend on the stack's database and keys (or on ``workers``),
    with its own options; always stopped."""
    web, stack_workers = stack_or_workers
    chosen = workers if workers is not None else stack_workers
    folder = Path(tempfile.mkdtemp(prefix="salvus-web2-", dir="/tmp"))
    other = None
    try:
        other = WebProcess(folder, [(f"x{i}", w.endpoint) for i, w in enumerate(chosen)],
                           web.dsn, *extra, keys=web.keys, name=folder.name)
        other.wait_ready()
        yield other
    finally:
        if other:
            other.stop()
        shutil.rmtree(folder, ignore_errors=True)


def test_a_cell_id_of_the_longest_allowed_length_gets_its_done(browser):
    b = browser()
    b.open()
    messages = b.run("c" * 64, "6 * 7")
    assert messages[-1]["type"] == "done" and messages[-1]["status"] == "ok"
    assert messages[-2]["data"]["text/plain"] == "42"


def get(url: str, host: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_a_page_asked_for_under_a_foreign_name_is_refused(stack):
    web, _ = stack
    for path in ("/", "/health", "/api/share"):
        status, body = get(web.url + path, host=f"attacker.example:{web.port}")
        assert status == 421, path
        assert "server_names" in json.loads(body)["error"]
    assert get(web.url + "/", host=f"localhost:{web.port}")[0] == 200


def test_names_in_server_names_are_served(stack):
    with frontend(stack, "--server-names", "math.example.org") as other:
        assert get(other.url + "/", host="math.example.org")[0] == 200
        assert get(other.url + "/", host="math.example.org:443")[0] == 200
        assert get(other.url + "/", host="other.example.org")[0] == 421


def test_a_blob_name_with_anything_after_it_is_not_found(stack):
    web, _ = stack
    got, answer = post(web, json.dumps({"code": "import matplotlib.pyplot as plt\n"
                                                "plt.plot([1, 2, 1])"}).encode())
    assert got == 200
    url = web.url + answer["images"][0]["url"]
    assert get(url)[0] == 200
    for suffix in ("%0A", "%0a", "x", "/", "%00"):
        assert get(url + suffix)[0] == 404, suffix


FORGE_IMAGE = ("import sys, hashlib\nsend = sys.stdout._stream._send\n"
               "def image(data, mime='image/png'):\n"
               "    send({'type': 'image', 'mime': mime, 'size': len(data),\n"
               "          'sha1': hashlib.sha1(data).hexdigest()}, data)\n")


def test_an_image_whose_bytes_are_not_its_type_is_not_stored(browser):
    b = browser()
    b.open()
    messages = b.run("c", FORGE_IMAGE + "image(b'<html><script>alert(1)</script>')\n"
                          "image(b'<html>no svg here</html>', 'image/svg+xml')")
    notices = [m["text"] for m in messages if m["type"] == "notice"]
    assert [m for m in messages if m["type"] == "image"] == []
    assert any("not image/png" in n for n in notices)
    assert any("not image/svg+xml" in n for n in notices)
    assert messages[-1]["status"] == "ok"


def test_a_sessions_images_stop_being_stored_at_its_budget(stack):
    with frontend(stack, "--images-mb", "1") as other:
        b = Browserish(other, f"browser={uuid.uuid4().hex}")
        try:
            b.open()
            messages = b.run("c", FORGE_IMAGE + "import os\nfor i in range(3):\n"
                                  "    image(b'\\x89PNG\\r\\n\\x1a\\n' + os.urandom(400000))")
            images = [m for m in messages if m["type"] == "image"]
            notices = [m["text"] for m in messages if m["type"] == "notice"]
            assert len(images) == 2 and all(m["url"].startswith("/blobs/") for m in images)
            assert len(notices) == 1 and "reached 1 MB" in notices[0]
            restarted = b.run("r", "1")  # the budget is per session, not per browser
            assert restarted[-1]["status"] == "ok"
        finally:
            b.close()


def test_the_frontends_caches_stay_within_budget_and_the_workers_log_fills_them(stack):
    """Over [web] logs_mb the frontend drops what it cached; a page that needs
    it again gets it from the session's log in its worker: nothing is lost."""
    with frontend(stack, "--logs-mb", "1") as other:
        away = Browserish(other, f"browser={uuid.uuid4().hex}")
        here = Browserish(other, f"browser={uuid.uuid4().hex}")
        try:
            session = away.open()["session"]
            away.run("a", "for i in range(1000): print('a' * 399)")
            away.close()
            here.open()
            for i in range(3):
                here.run(f"h{i}", "for i in range(600): print('h' * 399)")
            assert other.health()[1]["status"] == "ok"
            back = Browserish(other, away.cookie)
            try:
                attached = back.open(session=session, last_seq=0)
                assert attached["complete"] is True and attached["session"] == session
                assert attached["cells"][0]["state"] == "done"
                text = "".join(m.get("text", "") for m in back.until_done("a")
                               if m["type"] == "stream")
                assert text == ("a" * 399 + "\n") * 1000
            finally:
                back.close()
        finally:
            away.close()
            here.close()


def test_a_session_whose_browser_went_away_gives_its_place_to_one_that_is_here(
        stack, make_folder):
    worker = WorkerProcess(make_folder("full"), "python", "--spares", "0", uids=2,
                           keys=stack[0].keys)
    try:
        worker.wait_ready()
        with frontend(stack, workers=[worker]) as other:
            first, second, third = (Browserish(other, f"browser={uuid.uuid4().hex}")
                                    for _ in range(3))
            try:
                session = first.open()["session"]
                assert first.run("a", "1")[-1]["status"] == "ok"
                second.open()
                assert second.run("b", "2")[-1]["status"] == "ok"
                first.close()
                third.open()
                got = third.run("c", "3", timeout=30)
                assert got[-1]["status"] == "ok", got
                back = Browserish(other, first.cookie)
                try:
                    back.open(session=session, last_seq=0)
                    status = next(m for m in iter(back.receive, None)
                                  if m["type"] == "session_status")
                    assert status["state"] == "lost" and "make room" in status["reason"]
                finally:
                    back.close()
            finally:
                for b in (first, second, third):
                    b.close()
    finally:
        worker.stop()


def test_a_websocket_the_client_closes_is_hung_up_at_once(stack):
    """The server answers a close frame and ends the TCP connection itself (a
    client otherwise waits for it until its own timeout; the server holds the
    socket). A raw socket, so nothing between us and the bytes."""
    web, _ = stack
    with socket.create_connection(("127.0.0.1", web.port), timeout=10) as conn:
        key = base64.b64encode(os.urandom(16)).decode()
        conn.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{web.port}\r\n"
                      "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                      f"Cookie: salvus_browser={uuid.uuid4().hex}\r\n\r\n").encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += conn.recv(4096)
        assert answer.startswith(b"HTTP/1.1 101"), answer
        mask = os.urandom(4)
        payload = (1000).to_bytes(2, "big")
        conn.sendall(bytes([0x88, 0x80 | len(payload)]) + mask
                     + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        rest = answer.split(b"\r\n\r\n", 1)[1]
        while chunk := conn.recv(4096):  # until the server's FIN; a timeout fails
            rest += chunk
        assert rest[:1] == b"\x88"  # its close frame came first


HOSTILE_HTML = ("class Page:\n    def _repr_html_(self):\n"
                "        return ('<b>bold</b><script>alert(1)</script>'\n"
                "                '<img src=x onerror=alert(2)>'\n"
                "                '<a href=\"javascript:alert(3)\">a</a>')\n"
                "Page()")


def test_html_from_a_session_reaches_api_and_page_only_inert(stack, browser):
    web, _ = stack
    status, answer = post(web, json.dumps({"code": HOSTILE_HTML}).encode())
    assert status == 200, answer
    html = answer["result"]["text/html"]
    assert html.startswith("<b>bold</b>") and '<img src="x">' in html
    for gone in ("script", "onerror", "javascript"):
        assert gone not in html
    page = browser()
    page.open()
    result = next(m for m in page.run("h", HOSTILE_HTML) if m["type"] == "result")
    assert result["data"]["text/html"] == html


def test_completions_go_to_the_page_that_asked_and_not_into_the_log(stack, browser):
    page = browser()
    opened = page.open()
    page.send(type="complete", cell="a", code="pri")
    none_yet = page.receive()
    assert none_yet == {"type": "completions", "cell": "a", "prefix": "", "matches": []}
    page.run("a", "radius = 2\nimport math")
    page.send(type="complete", cell="b", code="x = math.sq")
    answer = page.receive()
    assert answer == {"type": "completions", "cell": "b", "prefix": "sq", "matches": ["sqrt"]}
    page.send(type="complete", cell="b", code="rad")
    assert page.receive()["matches"] == ["radius"]
    page.run("c", "1")  # after the completions in time
    again = browser(page.cookie)
    assert again.open(opened["session"])["type"] == "attached"
    replayed = []  # the whole log, replayed
    while not (replayed and replayed[-1].get("cell") == "c"
               and replayed[-1]["type"] == "done"):
        replayed.append(again.receive(10))
    assert [m["type"] for m in replayed if m.get("cell") == "a"][-1] == "done"
    assert all(m["type"] != "completions" for m in replayed)


def test_the_3d_viewer_page_is_always_sandboxed_and_framed_only_by_us(stack):
    web, _ = stack
    with urllib.request.urlopen(web.url + "/static/viewer3d.html", timeout=10) as response:
        policy = response.headers["Content-Security-Policy"]
        assert "sandbox allow-scripts" in policy and "frame-ancestors 'self'" in policy
        assert "unsafe-inline" not in policy.split("style-src")[0]
        assert response.headers["X-Frame-Options"] == "SAMEORIGIN"
    with urllib.request.urlopen(web.url + "/static/app.js", timeout=10) as response:
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
