"""The compute worker as a real process over real ZeroMQ: python engine."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time

import pytest

from sage_worker import protocol
from tests.helpers import processes_of_uid, wait_for


@pytest.fixture
def worker(worker_factory):
    return worker_factory()


@pytest.fixture
def client(worker):
    return worker.client()


@pytest.fixture
def session(client):
    return client.start()


def test_namespace_persists_across_executions(client, session):
    assert client.run(session, "x = 20").status == "ok"
    result = client.run(session, "x * 2 + 2")
    assert result.text == "42" and result.status == "ok"


@pytest.mark.parametrize("code, shown", [
    ("1 + 1", "2"), ("None", None), ("x = 3", None), ("'a'", "'a'"),
    ("print('p')\n7", "7"), ("[1, 2][0]", "1"), ("def f():\n    return 5\nf()", "5"),
])
def test_display_follows_the_interactive_interpreter(client, session, code, shown):
    result = client.run(session, code)
    assert result.status == "ok"
    assert result.text == shown


def test_underscore_holds_the_last_result(client, session):
    client.run(session, "6 * 7")
    assert client.run(session, "_ + 0").text == "42"


def test_sympy_result_carries_latex(client, session):
    result = client.run(session, "import sympy\nsympy.Rational(1, 3) * sympy.Symbol('x')**2")
    data = result.of("result")[0]["data"]
    assert data["text/plain"] == "x**2/3"
    assert data["text/latex"] == "\\frac{x^{2}}{3}"


def test_a_hundred_thousand_lines_arrive_complete_ordered_then_one_done(client, session):
    result = client.run(session, "for i in range(10**5): print(i)", timeout=120)
    assert result.stdout == "".join(f"{i}\n" for i in range(10**5))
    assert [m["type"] for m in result.messages].count("done") == 1
    assert result.messages[-1]["type"] == "done" and result.status == "ok"
    seqs = [m["seq"] for m in result.messages]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    # coalesced: far fewer messages than lines
    assert len(result.of("stream")) < 1000


def test_output_without_trailing_newline_and_both_streams(client, session):
    result = client.run(session, "import sys\nprint('abc', end='')\nsys.stderr.write('err')")
    assert result.stdout == "abc" and result.stderr == "err"
    assert result.status == "ok"


def test_output_of_c_code_and_subprocesses_is_captured_in_order(client, session):
    result = client.run(session, "import os\nprint('a')\nos.write(1, b'b\\n')\n"
                                 "os.system('echo c')\nprint('d')")
    assert result.stdout == "a\nb\nc\nd\n"


def test_slow_output_streams_without_waiting_for_the_end(client, session):
    # Streamed: 'first' is its own message, sent long before 'second' exists
    # (held to the end, the two would arrive coalesced in one message).
    result = client.run(session, "import time\nprint('first')\ntime.sleep(1)\n"
                                 "print('second')")
    assert [m["text"] for m in result.of("stream")] == ["first\n", "second\n"]
    assert result.status == "ok"


def test_error_shows_a_clean_traceback(client, session):
    result = client.run(session, "def f(x):\n    return 1 / x\nf(0)")
    [error] = result.of("error")
    assert error["ename"] == "ZeroDivisionError"
    assert "return 1 / x" in error["traceback"]
    assert "sage_worker" not in error["traceback"]
    assert result.status == "error"
    syntax = client.run(session, "1 +")
    assert syntax.status == "error" and syntax.of("error")[0]["ename"] == "SyntaxError"
    assert "sage_worker" not in syntax.of("error")[0]["traceback"]


def test_matplotlib_figures_become_images_with_their_hash(client, session):
    result = client.run(session, "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\n"
                                 "plt.show()")
    [image] = result.of("image")
    blob = result.blobs[result.messages.index(image)]
    # a plain vector plot goes as SVG
    assert image["mime"] == "image/svg+xml" and b"<svg" in blob[:400]
    assert image["sha1"] == hashlib.sha1(blob).hexdigest() and image["size"] == len(blob)
    assert result.stderr == ""
    assert client.run(session, "1").of("image") == []  # figures were closed


@pytest.mark.parametrize("code", ["while True: pass", "import time\ntime.sleep(100)"])
def test_interrupt_stops_the_code_and_keeps_the_session(client, session, code):
    client.run(session, "kept = 1")
    execution = client.execute(session, code)
    time.sleep(0.5)
    assert client.request("interrupt", session=session)["type"] == "interrupting"
    messages = client.collect(execution, timeout=10)
    assert messages[-1][0]["status"] == "interrupted"
    assert client.run(session, "kept").text == "1"


def test_restart_gives_a_fresh_namespace(client, session):
    client.run(session, "y = 1")
    reply = client.request("restart", session=session)
    assert reply["type"] == "restarted" and reply["session"] == session
    result = client.run(session, "y")
    assert result.status == "error" and result.of("error")[0]["ename"] == "NameError"


def test_executions_queue_in_order(client, session):
    ids = [client.execute(session, f"print({i})") for i in range(5)]
    for i, execution in enumerate(ids):
        messages = client.collect(execution)
        assert messages[0][0]["text"] == f"{i}\n" and messages[-1][0]["status"] == "ok"


def session_uid(client, session) -> int:
    return int(client.run(session, "import os\nos.getuid()").text)


def test_kill_9_of_the_session_child_reports_killed(client, session):
    uid = session_uid(client, session)
    execution = client.execute(session, "import time\ntime.sleep(100)")
    time.sleep(0.3)
    for pid in processes_of_uid(uid):  # the session process, seen from the host
        os.kill(pid, signal.SIGKILL)
    messages = client.collect(execution, timeout=10)
    assert messages[-1][0] == {**messages[-1][0], "type": "done", "status": "killed"}
    assert "signal 9" in messages[-2][0]["text"]
    ended, _ = client.receive(timeout=5)
    assert ended["type"] == "session_ended" and ended["reason"] == "crashed"
    refused = client.request("execute", session=session, execution="x", code="1")
    assert (refused["code"], refused["message"]) == ("ended", "crashed")  # and why


def test_kill_9_of_the_worker_leaves_no_session_process(worker_factory):
    worker = worker_factory()
    client = worker.client()
    uids = []
    for _ in range(3):
        session = client.start()
        uids.append(session_uid(client, session))
        client.execute(session, "import subprocess, time\n"
                                "subprocess.Popen(['setsid', 'sleep', '100'])\ntime.sleep(100)")
    wait_for(lambda: all(len(processes_of_uid(uid)) >= 2 for uid in uids),
             what="each session and its escaped grandchild to run")
    os.kill(worker.proc.pid, signal.SIGKILL)
    wait_for(lambda: not any(processes_of_uid(uid) for uid in uids), timeout=10,
             what="session processes to die with their worker")


@pytest.mark.parametrize("request_frames, code", [
    ([protocol.TAG, b"not json"], "malformed"),
    ([b"wrong tag", b"{}"], "malformed"),
    ([protocol.TAG, b"[1, 2]"], "malformed"),
    ([protocol.TAG, json.dumps({"type": "ping"}).encode()], "bad_field"),
    ([protocol.TAG, json.dumps({"type": "fly", "id": "1"}).encode()], "unknown_type"),
    ([protocol.TAG, json.dumps({"type": "execute", "id": "1", "session": 5}).encode()],
     "bad_field"),
    ([protocol.TAG, json.dumps({"type": "end", "id": "1", "session": "nope"}).encode()],
     "no_such_session"),
    ([protocol.TAG, b" " * (protocol.MAX_REQUEST_BYTES + 1)], "too_large"),
])
def test_bad_requests_get_error_replies_and_the_worker_goes_on(client, request_frames, code):
    client.send_raw(request_frames)
    reply, _ = client.receive(timeout=10)
    assert reply["type"] == "error" and reply["code"] == code, reply
    assert reply["message"]
    assert client.request("ping")["type"] == "pong"


def test_busy_reply_at_the_session_cap(worker_factory):
    worker = worker_factory("--max-sessions", "2")
    client = worker.client()
    first = client.start()
    second = client.start()
    for session in (first, second):  # pages watch both: neither may make room
        worker.watch(client, session)
    reply = client.request("start")
    assert reply["type"] == "error" and reply["code"] == "busy"
    assert "limit of 2 sessions" in reply["message"]
    assert client.request("end", session=first)["type"] == "ended"
    assert client.request("start")["type"] == "started"


def test_at_the_cap_the_session_unwatched_longest_makes_room(worker_factory):
    worker = worker_factory("--max-sessions", "2")
    client = worker.client()
    away = client.start()  # nobody ever watches it
    here = client.start()
    worker.watch(client, here)
    reply = client.request("start")
    assert reply["type"] == "started", reply
    ended = next(m for m, _ in iter(lambda: client.receive(10), None)
                 if m["type"] == "session_ended")
    assert (ended["session"], ended["reason"]) == (away, "released")
    assert client.run(here, "2").text == "2"


def test_a_session_nobody_watches_ends_after_the_linger_time(worker_factory):
    worker = worker_factory("--linger", "1")
    client = worker.client()
    watched, unwatched = client.start(), client.start()
    sub = worker.watch(client, watched)
    ended, _ = client.receive(timeout=10)
    assert (ended["type"], ended["session"], ended["reason"]) == ("session_ended", unwatched,
                                                                  "left")
    assert client.run(watched, "3").text == "3"
    sub.close(linger=0)  # its page goes: it ends a second later
    ended, _ = client.receive(timeout=10)
    assert (ended["type"], ended["session"], ended["reason"]) == ("session_ended", watched,
                                                                  "left")


def test_idle_sessions_are_ended(worker_factory):
    client = worker_factory("--idle-timeout", "1").client()
    session = client.start()
    client.run(session, "1")
    ended, _ = client.receive(timeout=10)
    assert ended == {**ended, "type": "session_ended", "session": session, "reason": "idle"}
    assert client.request("ping")["sessions"] == 0


def test_wall_time_interrupts_with_timeout(worker_factory):
    client = worker_factory("--wall-time", "1").client()
    session = client.start()
    result = client.run(session, "while True: pass", timeout=15)
    assert result.status == "timeout"
    # Said as the limit it is, not as a KeyboardInterrupt nobody asked for.
    assert not result.of("error")
    assert [n["text"] for n in result.of("notice")] == [
        "Stopped after 1 s, the wall_time limit of one execution on this appliance (its "
        "admin sets [worker] wall_time)."]
    assert client.run(session, "2").text == "2"


def test_a_layout_stays_with_the_session_and_comes_back_in_its_replay(worker_factory):
    worker = worker_factory()
    client = worker.client()
    session = client.start()
    layout = [{"cell": "b", "code": "2 + 2"}, {"cell": "a", "code": "not run yet"}]
    reply = client.request("layout", session=session, cells=layout)
    assert reply["type"] == "laid_out"
    refused = client.request("layout", session=session, cells=[{"cell": "a", "code": 1}])
    assert refused["type"] == "error" and refused["code"] == "bad_field"
    replayed = worker.client().request("replay", session=session, after=0)
    assert replayed["type"] == "replayed" and replayed["layout"] == layout


def test_code_that_ignores_interrupts_is_killed_after_the_grace(worker_factory):
    client = worker_factory("--wall-time", "1", "--interrupt-grace", "1").client()
    session = client.start()
    result = client.run(session, "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)"
                                 "\nwhile True: pass", timeout=15)
    assert result.status == "timeout"
    assert "did not stop" in result.of("notice")[0]["text"]
    ended, _ = client.receive(timeout=5)
    assert ended["type"] == "session_ended"


@pytest.mark.parametrize("flags, code", [
    (["--cpu-seconds", "1"], "while True: pass"),
    (["--memory-mb", "200"], "x = bytearray(1500 * 2**20)"),
    (["--file-size-mb", "1"], "open('big', 'wb').write(b'x' * 3 * 2**20)"),
    (["--open-files", "40"], "files = [open('f%d' % i, 'w') for i in range(100)]"),
    (["--output-bytes", "10000"], "while True: print('x' * 100)"),
])
def test_each_limit_ends_with_status_limit_and_the_worker_survives(worker_factory, flags,
                                                                   code):
    worker = worker_factory(*flags)
    client = worker.client()
    session = client.start()
    result = client.run(session, code, timeout=30)
    assert result.status == "limit", result.messages[-3:]
    assert client.request("ping")["type"] == "pong"
    assert client.run(client.start(), "3").text == "3"


def test_output_cap_sends_one_notice_and_drops_the_rest(worker_factory):
    client = worker_factory("--output-bytes", "10000").client()
    session = client.start()
    result = client.run(session, "for i in range(10**6): print('y' * 50)")
    assert len(result.of("notice")) == 1 and result.status == "limit"
    assert len(result.stdout) <= 10000
    assert client.run(session, "print('after')").stdout == "after\n"


def test_environment_is_scrubbed(worker_factory):
    worker = worker_factory(env={"SALVUS_TEST_SECRET": "hunter2"})
    client = worker.client()
    session = client.start()
    result = client.run(session, "import os\nsorted(os.environ)")
    assert "SALVUS_TEST_SECRET" not in result.text
    assert set(eval(result.text)) <= {"PATH", "HOME", "TMPDIR", "LANG", "LC_ALL",
                                      "MPLBACKEND"}
    # Not even in the memory sessions are forked from: the worker restarted clean.
    with open(f"/proc/{worker.proc.pid}/environ", "rb") as f:
        assert b"hunter2" not in f.read()


def test_random_generators_are_reseeded_per_session(client):
    draws = {client.run(client.start(), "import random, numpy\n"
                                        "(random.random(), numpy.random.rand())").text
             for _ in range(3)}
    assert len(draws) == 3


def test_an_interrupt_that_is_ignored_ends_in_killed(worker_factory):
    client = worker_factory("--interrupt-grace", "1").client()
    session = client.start()
    execution = client.execute(session, "import signal\nsignal.signal(signal.SIGINT, "
                                        "signal.SIG_IGN)\nwhile True: pass")
    time.sleep(0.5)
    client.request("interrupt", session=session)
    messages = client.collect(execution, timeout=15)
    assert messages[-1][0]["status"] == "killed"


def zombies_of(pid: int) -> list[int]:
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == pid:
            found.append(int(entry))
    return found


def test_children_are_reaped_promptly(worker):
    client = worker.client()
    for _ in range(5):
        session = client.start()
        client.run(session, "1")
        client.request("end", session=session)
    crashing = client.start()
    client.run(crashing, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    # A killed session may still be exiting (not yet a zombie) for a moment:
    # reaped means no zombie left and no session counted, within seconds.
    wait_for(lambda: zombies_of(worker.proc.pid) == []
             and client.request("ping")["sessions"] == 0, timeout=5,
             what="the worker to reap its children")


def interact_run(client, session, interact_id, values):
    execution = f"u{time.monotonic_ns()}"
    client.send_raw(protocol.request("interact", "q", session=session, execution=execution,
                                     interact=interact_id, values=values))
    return client.collect(execution)


def test_interact_announces_controls_from_sage_style_shorthands(client, session):
    result = client.run(session, "@interact\ndef f(n=(1, 5), t='hi', b=False, c=['x', 'y'],"
                                 " s=slider(0, 1, 0.25, default=0.5), k=color_selector()):\n"
                                 "    print(n, t, b, c, s, k)")
    [announce] = result.of("interact")
    kinds = {c["name"]: c["type"] for c in announce["controls"]}
    assert kinds == {"n": "slider", "t": "input_box", "b": "checkbox", "c": "selector",
                     "s": "slider", "k": "color"}
    slider = next(c for c in announce["controls"] if c["name"] == "s")
    assert slider["labels"] == ["0.0", "0.25", "0.5", "0.75", "1.0"] and slider["value"] == 2
    [printed] = [m for m in result.of("stream") if m.get("interact") == announce["interact"]]
    assert printed["text"] == "1 hi False x 0.5 #1d3557\n"
    again = interact_run(client, session, announce["interact"],
                         {"n": 4, "t": "yo", "b": True, "c": 1, "s": 4, "k": "#ff0000"})
    assert [m["text"] for m, _ in again if m["type"] == "stream"] == \
        ["5 yo True y 1.0 #ff0000\n"]
    assert again[-1][0]["status"] == "ok"


def test_interact_input_boxes_evaluate_in_the_session(client, session):
    client.run(session, "base = 100")
    result = client.run(session, "@interact\ndef f(x=input_box(1)):\n    return x + 1")
    interact_id = result.of("interact")[0]["interact"]
    assert result.of("result")[0]["data"]["text/plain"] == "2"
    again = interact_run(client, session, interact_id, {"x": "base * 2"})
    assert [m["data"]["text/plain"] for m, _ in again if m["type"] == "result"] == ["201"]


def test_interact_errors_show_in_its_output_and_it_keeps_working(client, session):
    result = client.run(session, "@interact\ndef f(k=[1, 0]):\n    print(1 / k)")
    assert result.status == "ok"
    interact_id = result.of("interact")[0]["interact"]
    broken = interact_run(client, session, interact_id, {"k": 1})
    error = next(m for m, _ in broken if m["type"] == "error")
    assert error["ename"] == "ZeroDivisionError" and error["interact"] == interact_id
    fixed = interact_run(client, session, interact_id, {"k": 0})
    assert [m["text"] for m, _ in fixed if m["type"] == "stream"] == ["1.0\n"]
    unknown = interact_run(client, session, "nope", {})
    assert unknown[-1][0]["status"] == "error"


def test_raster_and_heavy_figures_go_as_sharp_pngs(client, session):
    result = client.run(session, "import numpy as np, matplotlib.pyplot as plt\n"
                                 "fig = plt.figure(figsize=(4, 3), dpi=100)\n"
                                 "plt.imshow(np.random.rand(20, 20))\n"
                                 "plt.figure(); plt.scatter(*np.random.rand(2, 50000))")
    images = result.of("image")
    assert [i["mime"] for i in images] == ["image/png", "image/png"]
    first = result.blobs[result.messages.index(images[0])]
    pixels = int.from_bytes(first[16:20], "big")
    assert images[0]["width"] * 2 == pixels  # drawn at twice the size it is shown


def test_sympy_plots_show_as_images_only(client, session):
    result = client.run(session, "import sympy\nx = sympy.Symbol('x')\nsympy.plot(x**2)")
    assert [m["type"] for m in result.messages] == ["image", "done"]
    assert result.status == "ok"


def test_more_control_spellings(client, session):
    result = client.run(session, "@interact\ndef f(a=('red', 'green'), b=range(0, 50, 10),"
                                 " c=slider([2, 3, 5, 7]), d=selector(('x', 'y'), default='y'),"
                                 " e=checkbox(False, label='flag')):\n    print(a, b, c, d, e)")
    controls = {c["name"]: c for c in result.of("interact")[0]["controls"]}
    assert [controls[n]["type"] for n in "abcde"] == ["selector", "slider", "slider",
                                                      "selector", "checkbox"]
    assert controls["b"]["labels"] == ["0", "10", "20", "30", "40"]
    assert controls["e"]["label"] == "flag"
    assert result.stdout == "red 0 2 y False\n"


def test_help_on_a_name_in_plain_python(client, session):
    shown = client.run(session, "import json\njson.dumps?").text
    assert shown.startswith("Signature: dumps(obj, *") and "Docstring:" in shown
    assert "def greet" in client.run(session, "def greet(who):\n    return who\ngreet??").text


def test_completion_offers_names_and_attributes_of_the_live_session(client, session):
    client.run(session, "import math\nradius = 2\nclass Box:\n    width = 1\n    _inner = 2\n"
                        "box = Box()")
    names = client.complete(session, "x = rad").of("completions")[0]
    assert names["matches"] == ["radius"] and (names["start"], names["end"]) == (4, 7)
    attributes = client.complete(session, "math.sq").of("completions")[0]
    assert attributes["matches"] == ["sqrt"]
    assert client.complete(session, "box.").of("completions")[0]["matches"] == ["width"]
    private = client.complete(session, "box._in").of("completions")[0]["matches"]
    assert private == ["_inner"]
    middle = client.complete(session, "len(rad) + 1", cursor=7).of("completions")[0]
    assert middle["matches"] == ["radius"] and middle["start"] == 4
    keyword = client.complete(session, "whi").of("completions")[0]["matches"]
    assert keyword == ["while"]
    assert client.complete(session, "nothing_like_this.x").of("completions")[0]["matches"] == []
    assert client.run(session, "radius + 1").text == "3"  # the session carries on


def test_completion_while_a_cell_runs_is_refused_as_busy(client, session):
    execution = client.execute(session, "import time\ntime.sleep(2)")
    with pytest.raises(AssertionError, match="busy"):
        client.complete(session, "ti")
    assert client.collect(execution)[-1][0]["status"] == "ok"


def test_completions_asked_back_to_back_are_all_answered(client, session):
    """A fast typist asks again before the last answer's done is back: the
    second completion waits for the first instead of being refused as busy."""
    client.run(session, "radius_of_circle = 3\nradius_of_sphere = 4")
    asked = {}
    for code in ("radius_of_c", "radius_of_circle + radius_of_", "radius_of_s"):
        asked[f"c{len(asked)}"] = code
        client.sock.send_multipart(protocol.request(
            "complete", f"r{len(asked)}", session=session, execution=f"c{len(asked) - 1}",
            code=code, cursor=len(code)))
    answers, done = {}, set()
    while done != set(asked):
        message, _ = client.receive(30)
        assert message["type"] != "error", message
        if message["type"] == "completions":
            answers[message["execution"]] = message["matches"]
        elif message["type"] == "done":
            done.add(message["execution"])
    assert answers == {"c0": ["radius_of_circle"],
                       "c1": ["radius_of_circle", "radius_of_sphere"],
                       "c2": ["radius_of_sphere"]}


def test_a_bad_cursor_is_refused(client, session):
    reply = client.request("complete", session=session, execution="c", code="abc", cursor=9)
    assert reply["type"] == "error" and reply["code"] == "bad_field"


def test_a_worker_started_without_a_locale_restarts_once_not_forever():
    """Python coerces a missing locale by setting LC_CTYPE itself: the clean
    environment after the one restart must count as clean."""
    import subprocess
    import sys

    from sage_worker.__main__ import clean_environment

    started = subprocess.run([sys.executable, "-c", "import os; print(dict(os.environ))"],
                             env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                             check=True, timeout=30)
    as_python_has_it = eval(started.stdout)  # {'PATH': ..., 'LC_CTYPE': 'C.UTF-8'} here
    assert clean_environment(as_python_has_it) is None
    assert clean_environment({**as_python_has_it, "SALVUS_DSN": "secret"}) == as_python_has_it


# ------------------------------------------------------------ the session's log


def _published(sock, timeout: float = 10) -> dict:
    assert sock.poll(int(timeout * 1000)), "nothing published"
    return protocol.parse_published(sock.recv_multipart())[0]


def _replay(client, session: str, after: int) -> tuple[list[dict], dict]:
    """What replay sends: the logged messages, then the replayed reply."""
    client.sock.send_multipart(protocol.request("replay", "rp", session=session, after=after))
    got = []
    while True:
        message, _ = client.receive(10)
        if message.get("re") == "rp":
            return got, message
        got.append(message)


def test_every_session_message_is_logged_published_and_replayed(worker_factory):
    worker = worker_factory()
    client = worker.client()
    session = client.start()
    sub = worker.subscriber(session)
    # The subscription travels to the worker on its own: until it is there,
    # nothing is published (what was missed is in the log).
    wait_for(lambda: client.run(session, "1") and sub.poll(100), 10, what="a subscription")
    while sub.poll(200):
        sub.recv_multipart()
    execution = client.execute(session, "print('a'); print('b')\n6*7", cell="c1")
    sent = client.collect(execution)
    published = [_published(sub)]
    while published[-1]["type"] != "done":
        published.append(_published(sub))
    kinds = [m["type"] for m in published]
    assert kinds[:2] == ["queued", "running"] and kinds[-1] == "done"
    assert published[0]["code"] == "print('a'); print('b')\n6*7"
    assert all(m["cell"] == "c1" and m["execution"] == execution for m in published)
    seqs = [m["seq"] for m in published]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # numbered without gaps
    # The asker got the output itself (not the worker's own queued/running).
    assert [m["seq"] for m, _ in sent] == seqs[2:]
    client.complete(session, "pri")  # a completion is the asker's alone
    assert not sub.poll(300)
    logged, replayed = _replay(client, session, seqs[0] - 1)
    assert logged == published
    assert replayed["first"] == 1 and replayed["last"] == seqs[-1]
    assert replayed["cells"] == [{"cell": "c1", "code": "print('a'); print('b')\n6*7",
                                  "execution": execution, "state": "done", "status": "ok"}]
    assert client.request("restart", session=session)["type"] == "restarted"
    logged, _ = _replay(client, session, 0)  # one session, one log, restarts included
    assert [m["seq"] for m in logged] == list(range(1, seqs[-1] + 2))
    assert logged[-1]["type"] == "session_restarted"  # every page hears of it
    refused = client.request("replay", session="nope", after=0)
    assert refused["code"] == "no_such_session"


def test_the_logs_of_all_sessions_stay_within_the_budget(worker_factory):
    worker = worker_factory("--log-mb", "1")
    client = worker.client()
    session = client.start()
    for _ in range(4):  # 4 x 400 KB
        assert client.run(session, "print('x' * 400000)").status == "ok"
    logged, replayed = _replay(client, session, 0)
    assert replayed["first"] > 1 and logged[0]["seq"] == replayed["first"]
    assert sum(len(m.get("text", "")) for m in logged) <= 1 << 20
    assert logged[-1]["type"] == "done"  # the newest are kept


def test_the_publisher_gives_nothing_to_a_peer_with_an_unknown_key(worker_factory):
    from tests.worker_client import stranger_key

    worker = worker_factory()
    client = worker.client()
    session = client.start()
    stranger = worker.subscriber(session, key=stranger_key())
    ours = worker.watch(client, session)  # the allowed key gets the session's messages
    client.run(session, "print('secret')")
    assert ours.poll(5000)
    assert not stranger.poll(500)
    assert "refused a client with an unknown CURVE key" in worker.log.read_text()


def test_an_execution_not_direct_is_only_published(worker_factory):
    """A frontend that watches the session asks direct: false and gets each
    message once, from the publisher."""
    worker = worker_factory()
    client = worker.client()
    session = client.start()
    sub = worker.watch(client, session)
    while sub.poll(200):
        sub.recv_multipart()
    client.execute(session, "print('once')", direct=False, cell="c")
    published = [_published(sub)]
    while published[-1]["type"] != "done":
        published.append(_published(sub))
    assert [m["type"] for m in published] == ["queued", "running", "stream", "done"]
    assert not client.sock.poll(300)  # nothing came to the asker itself


def test_a_subprocess_s_output_keeps_its_place_between_prints(client, session):
    # The subprocess writes to the pipe while the prints around it wait in
    # stdout's buffer: each must still come out where it was made.
    code = ("import os, subprocess\n"
            "for i in range(20):\n"
            "    print(f'p{i}')\n"
            "    os.system(f'echo s{i}')\n"
            "    subprocess.run(['echo', f'r{i}'])\n")
    result = client.run(session, code)
    assert result.stdout == "".join(f"p{i}\ns{i}\nr{i}\n" for i in range(20))
