"""A session is confined: real workers, real namespaces, hostile code.

Each test attacks through what a session can do (its code) or what a local
user can do (the worker's port), and checks what must hold: sessions share
nothing, the install stays readable and everything else private, limits hold
outside the session's reach, and the worker goes on serving.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from sage_worker import protocol
from tests.helpers import private_venv, processes_of_uid, terminate, wait_for
from tests.worker_client import stranger_key

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="isolation full needs root")
NOBODY = 65534


@pytest.fixture
def client(worker_factory):
    return worker_factory().client()


def value(client, session, code: str):
    result = client.run(session, code)
    assert result.status == "ok", result.messages
    return eval(result.text)


def test_sessions_have_their_own_uid_home_tmp_and_shm(client):
    a, b = client.start(), client.start()
    places = ["'mine.txt'", "'/tmp/mine.txt'", "'/var/tmp/mine.txt'", "'/dev/shm/mine.txt'"]
    written = value(client, a, "import os\n[os.path.abspath(p) for p in [" + ", ".join(places)
                    + "] if open(p, 'w').write('a secret')]")
    assert len(written) == 4
    uid_a = value(client, a, "os.getuid()")
    uid_b = value(client, b, "import os\nos.getuid()")
    assert uid_a != uid_b and 0 not in (uid_a, uid_b)
    # b looks in the very same places: empty, every one of them
    assert value(client, b, f"[os.path.exists(p) for p in {written!r}]") == [False] * 4
    assert value(client, b, "[len(os.listdir(d)) for d in ('/dev/shm', '/var/tmp')]") == [0, 0]
    # and none of it is on the host
    assert not any(Path(p).exists() for p in written[1:])


def test_a_session_sees_only_its_own_processes(client):
    session = client.start()
    pids = value(client, session, "import os\nsorted(int(p) for p in os.listdir('/proc') "
                                  "if p.isdigit())")
    assert pids == [1, 2]  # its init and itself
    assert value(client, session, "os.getpid()") == 2
    assert value(client, session, "import subprocess\nlen(subprocess.run(['ps', '-e'], "
                                  "capture_output=True).stdout.splitlines())") <= 4


def test_escaped_grandchildren_die_with_their_session_at_once(client):
    session = client.start()
    uid = value(client, session, "import os\nos.getuid()")
    client.run(session, "import subprocess, os\n"
                        "subprocess.Popen(['setsid', 'sleep', '1000'])\n"
                        "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
                        "        import time; time.sleep(1000)\n    os._exit(0)")
    wait_for(lambda: len(processes_of_uid(uid)) >= 3, what="the escapees to run")
    assert client.request("end", session=session)["type"] == "ended"
    wait_for(lambda: processes_of_uid(uid) == [], timeout=2, interval=0.02,
             what="every process of the session to die with it")


def shmem_kb() -> int:
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Shmem:"))


def test_files_in_dev_shm_go_with_their_session(worker_factory):
    client = worker_factory("--disk-mb", "200").client()
    session = client.start()
    before = shmem_kb()
    result = client.run(session, "for i in range(3): open(f'/dev/shm/{i}', 'wb').write("
                                 "b'x' * (40 << 20))")
    assert result.status == "ok", result.messages
    assert shmem_kb() - before > 100_000  # held in memory while the session lives
    client.request("end", session=session)
    wait_for(lambda: shmem_kb() - before < 20_000, timeout=10,
             what="the session's memory-backed files to be freed")


@pytest.mark.parametrize("code", [
    "open('big', 'wb').write(b'x' * (20 << 20))",
    "open('/tmp/big', 'wb').write(b'x' * (20 << 20))",
    "for i in range(500): open('/dev/shm/f%d' % i, 'w').close()",
])
def test_the_disk_quota_counts_bytes_and_files_across_every_place(worker_factory, code):
    client = worker_factory("--disk-mb", "8", "--disk-files", "100").client()
    session = client.start()
    result = client.run(session, code)
    assert result.status == "limit"
    assert result.of("error")[0]["evalue"].startswith("[Errno 28]")  # ENOSPC
    assert client.run(session, "2 + 2").text == "4"  # the session itself goes on


def test_root_home_and_the_worker_keys_are_out_of_sight(worker_factory):
    worker = worker_factory()
    client = worker.client()
    session = client.start()
    assert value(client, session, "import os\nos.listdir('/root')") == []
    assert value(client, session, f"os.path.exists({str(worker.keys.server_secret)!r})") \
        is False
    # of the worker's folder (its log, its keys), only the way to the session's home shows
    assert value(client, session, f"os.listdir({str(worker.folder)!r})") == ["sessions"]
    # what the session needs stays readable
    assert value(client, session, "import json, numpy\nint(numpy.arange(3).sum())") == 3


def test_private_network_namespace(worker_factory):
    worker = worker_factory()
    client = worker.client()
    session = client.start()
    result = client.run(session, f"import socket\nsocket.create_connection("
                                 f"('127.0.0.1', {worker.port}), timeout=2)")
    assert result.status == "error"
    assert result.of("error")[0]["ename"] in ("OSError", "ConnectionRefusedError",
                                              "TimeoutError")


def test_a_fork_bomb_is_contained_and_reaped(worker_factory):
    client = worker_factory("--processes", "30").client()
    session = client.start()
    uid = value(client, session, "import os\nos.getuid()")
    result = client.run(session, "import os, time\nwhile True:\n"
                                 "    if os.fork() == 0:\n        time.sleep(100)\n"
                                 "        os._exit(0)", timeout=30)
    assert result.status == "limit"
    assert 0 < len(processes_of_uid(uid)) <= 30
    assert client.request("end", session=session)["type"] == "ended"
    wait_for(lambda: processes_of_uid(uid) == [], timeout=2, what="the bomb to be gone")
    assert client.request("ping")["sessions"] == 0


def test_the_worker_never_kills_a_process_it_did_not_start(worker_factory):
    # A process of another program that happens to run with a uid of the range
    # (another appliance's session, say) survives the worker's start and work.
    worker = worker_factory(ready=False)
    outsider = subprocess.Popen(["sleep", "300"], user=worker.uid_base() + 3)
    try:
        worker.wait_ready()
        client = worker.client()
        for _ in range(6):
            session = client.start()
            client.run(session, "1")
            client.request("end", session=session)
        worker.stop()
        assert outsider.poll() is None, "the worker killed a process it did not start"
    finally:
        terminate(outsider)


def test_isolation_none_is_said_and_runs_as_the_worker(worker_factory):
    client = worker_factory("--isolation", "none").client()
    assert client.request("ping")["isolation"]["mode"] == "none"
    session = client.start()
    assert value(client, session, "import os\nos.getuid()") == 0


def test_full_isolation_without_root_stops_the_worker_with_one_line(worker_factory):
    worker = worker_factory(ready=False, user=NOBODY)
    assert worker.proc.wait(timeout=60) == 78
    errors = [line for line in worker.log.read_text().splitlines() if "Error:" in line]
    assert len(errors) == 1 and "isolation = none" in errors[0] and "root" in errors[0]
    assert "Traceback" not in worker.log.read_text()


def test_an_install_in_a_private_folder_works_for_sessions(worker_factory, make_folder):
    python = private_venv(make_folder())
    worker = worker_factory(python=str(python))
    client = worker.client()
    session = client.start()
    assert value(client, session, "import sys, numpy\n(sys.prefix, int(numpy.ones(2).sum()))"
                 ) == (str(python.parent.parent), 2)
    # of that folder, only the install shows
    private = python.parent.parent.parent
    assert value(client, session, f"import os\nos.listdir({str(private)!r})") == ["venv"]


def test_an_install_sessions_cannot_read_stops_the_worker(worker_factory, make_folder):
    python = private_venv(make_folder(), mode_of_lib=0o700)
    worker = worker_factory(ready=False, python=str(python))
    assert worker.proc.wait(timeout=60) == 78
    errors = [line for line in worker.log.read_text().splitlines() if "Error:" in line]
    assert len(errors) == 1 and "cannot read" in errors[0] and "chmod" in errors[0]


def test_a_sessions_folder_inside_a_private_folder_works(worker_factory, make_folder):
    private = make_folder() / "private"
    private.mkdir(mode=0o700)
    client = worker_factory(sessions_dir=private / "data" / "sessions").client()
    session = client.start()
    assert value(client, session, "open('f', 'w').write('ok')") == 2


# ------------------------------------------------------------ the worker's port


def test_a_client_without_a_known_key_gets_nothing(worker_factory):
    worker = worker_factory()
    stranger = worker.client(key=stranger_key())
    with pytest.raises(TimeoutError):
        stranger.request("ping", timeout=3)
    with pytest.raises(TimeoutError):
        stranger.request("start", timeout=1)
    assert "refused a client with an unknown CURVE key" in worker.log.read_text()
    assert worker.client().request("ping")["sessions"] == 0  # nothing was started


def test_garbage_on_the_port_does_no_harm(worker_factory):
    worker = worker_factory()
    for junk in (b"\xff" * 10000, b"GET / HTTP/1.1\r\n\r\n", os.urandom(65536)):
        with socket.create_connection(("127.0.0.1", worker.port), timeout=5) as s:
            s.sendall(junk)
    client = worker.client()
    assert client.run(client.start(), "6 * 7").text == "42"


# ------------------------------------------------------------ what a session sends


def test_the_output_cap_holds_when_the_session_lifts_its_own(worker_factory):
    worker = worker_factory("--output-bytes", "100000")
    client = worker.client()
    session = client.start()
    result = client.run(session, "import sys\nsys.stdout._stream.cap = 10**15\n"
                                 "while True: print('x' * 999)", timeout=30)
    assert result.status == "limit"
    assert len(result.stdout) <= 2 * 100000 + (64 << 10)  # the parent's cap: see server.py
    assert any("Output limit" in n["text"] for n in result.of("notice"))
    # The interrupt met the session inside a send: the message still went whole.
    assert client.run(session, "print('after')").stdout == "after\n"
    assert "bad channel data" not in worker.log.read_text()


FORGERIES = {
    "an html image": "send({'type': 'image', 'mime': 'text/html', 'size': 6, 'sha1': 'a' * 40},"
                     " b'<html>')",
    "a stream of numbers": "send({'type': 'stream', 'name': 'stdout', 'text': 5})",
    "a list": "end.sock.sendall(channel.encode([1, 2]))",
    "a bad result": "send({'type': 'result', 'data': {'text/plain': 1, 'x/evil': 'y'}})",
    "an unknown status": "send({'type': 'done', 'status': 'pwned'})",
}


@pytest.mark.parametrize("forgery", FORGERIES.values(), ids=FORGERIES.keys())
def test_forged_messages_are_dropped_and_nothing_else_breaks(worker_factory, forgery):
    worker = worker_factory()
    client = worker.client()
    session = client.start()
    result = client.run(session, "import sys\nfrom sage_worker import channel\n"
                                 "end = sys.stdout._stream._send.__self__\nsend = end.send\n"
                                 f"{forgery}\nprint('still here')")
    assert result.status == "ok" and result.stdout == "still here\n"
    for message, blob in zip(result.messages, result.blobs, strict=True):
        fields = {k: v for k, v in message.items()
                  if k not in ("type", "session", "execution", "seq")}
        protocol.check_output(message["type"], fields, blob)  # everything passed on is valid
    assert client.request("ping")["type"] == "pong"


@pytest.mark.parametrize("raw", [
    "channel.HEADER.pack(2**31, 0) + b'x' * 64",  # a message larger than any allowed
    "channel.HEADER.pack(200001, 0) + b'[' * 100000 + b']' * 100000 + b'!'",
    "channel.HEADER.pack(3, 0) + b'{{{'",
])
def test_a_corrupt_channel_ends_that_session_only(worker_factory, raw):
    worker = worker_factory()
    client = worker.client()
    other = client.start()
    session = client.start()
    result = client.run(session, "import sys, time\nfrom sage_worker import channel\n"
                                 "end = sys.stdout._stream._send.__self__\n"
                                 f"end.sock.sendall({raw})\ntime.sleep(30)", timeout=20)
    assert result.status == "killed"
    assert client.run(other, "1 + 1").text == "2"
    assert "bad channel data" in worker.log.read_text()
    assert "internal error" not in worker.log.read_text()


def test_a_client_that_does_not_read_holds_back_only_its_own_sessions(worker_factory):
    worker = worker_factory("--output-bytes", str(1 << 30), "--wall-time", "4")
    idle = worker.client()  # starts a flood and does not read for a while
    flood = idle.start()
    execution = idle.execute(flood, "while True: print('x' * 999)")
    busy = worker.client()
    for i in range(20):  # meanwhile another client is served as usual
        assert busy.run(busy.start(), f"{i} * 2").text == str(i * 2)
    rss = int(next(line.split()[1] for line in
                   Path(f"/proc/{worker.proc.pid}/status").read_text().splitlines()
                   if line.startswith("VmRSS")))
    assert rss < 400_000, f"worker holds {rss} kB for a client that does not read"
    messages = idle.collect(execution, timeout=60)  # now it reads: nothing was lost
    seqs = [m["seq"] for m, _ in messages]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert messages[-1][0]["status"] == "timeout"


def test_claim_ends_the_sessions_a_client_no_longer_holds(worker_factory):
    client = worker_factory().client()
    kept, dropped = client.start(), client.start()
    reply = client.request("claim", sessions=[kept])
    assert reply["type"] == "claimed" and reply["ended"] == 1
    assert client.run(kept, "1").text == "1"
    refused = client.request("execute", session=dropped, execution="x", code="1")
    assert (refused["code"], refused["message"]) == ("ended", "abandoned")


# ------------------------------------------------------------ found by attacking it


def worker_rss_kb(worker) -> int:
    status = Path(f"/proc/{worker.proc.pid}/status").read_text().splitlines()
    return int(next(line.split()[1] for line in status if line.startswith("VmRSS")))


def test_a_flood_of_restarts_never_stops_the_worker_from_answering(worker_factory):
    worker = worker_factory()
    client = worker.client()
    session = client.start()
    client.run(session, "1")
    for i in range(500):
        client.send_raw(protocol.request("restart", f"spam{i}", session=session))
    assert client.request("ping", timeout=5)["type"] == "pong"  # answered meanwhile
    replies = []
    while len(replies) < 500:
        message, _ = client.receive(timeout=30)
        if str(message.get("re", "")).startswith("spam"):
            replies.append(message)
    restarted = [r for r in replies if r["type"] == "restarted"]
    assert 1 <= len(restarted) <= 3  # at most one a second
    assert all(r["code"] == "busy" for r in replies if r["type"] == "error")
    assert client.run(session, "2 + 2").text == "4"


def test_a_flood_of_tiny_junk_messages_is_cut_and_the_worker_stays_small(worker_factory):
    worker = worker_factory("--wall-time", "30", "--output-bytes", "1000000")
    client = worker.client()
    session = client.start()
    execution = client.execute(session, "import sys, time\nfrom sage_worker import channel\n"
                                        "end = sys.stdout._stream._send.__self__\n"
                                        "junk = channel.encode({'type': ['x']}) * 50000\n"
                                        "while True: end.sock.sendall(junk)")
    other = worker.client()
    for i in range(10):  # the worker serves others meanwhile
        assert other.run(other.start(), f"{i} + 1").text == str(i + 1)
    messages = client.collect(execution, timeout=30)
    assert messages[-1][0]["status"] == "limit"
    assert worker_rss_kb(worker) < 400_000
    assert len(worker.log.read_text()) < 20_000  # junk is logged once, not per message


FORGED_OUTPUT = {
    "huge results": "for i in range(20): send({'type': 'result', "
                    "'data': {'text/plain': 'R' * (1 << 20)}})",
    "wide characters": "for i in range(20): send({'type': 'stream', 'name': 'stdout', "
                       "'text': '\\U0001F600' * (1 << 18)})",
}


@pytest.mark.parametrize("code", FORGED_OUTPUT.values(), ids=FORGED_OUTPUT.keys())
def test_forged_output_of_any_kind_counts_against_the_cap(worker_factory, code):
    client = worker_factory("--output-bytes", "1000000").client()
    session = client.start()
    result = client.run(session, "import sys\nsend = sys.stdout._stream._send\n" + code +
                        "\nimport time\ntime.sleep(30)")
    assert result.status == "limit"
    received = sum(len(json.dumps(m, ensure_ascii=False).encode()) for m in result.messages)
    assert received < 2 * 1000000 + (1 << 20)


def test_a_lone_surrogate_from_a_session_reaches_the_client_as_an_escape(client):
    session = client.start()
    result = client.run(session, "import sys\nfrom sage_worker import channel\n"
                                 "end = sys.stdout._stream._send.__self__\n"
                                 "body = b'{\"type\":\"stream\",\"name\":\"stdout\","
                                 "\"text\":\"a\\\\ud800b\"}'\n"
                                 "end.sock.sendall(channel.HEADER.pack(len(body), 0) + body)\n"
                                 "print('after')")
    assert result.status == "ok"
    assert "a\ud800b" in [m["text"] for m in result.of("stream")]
    assert client.run(session, "1 + 1").text == "2"


def test_a_forged_done_does_not_lift_the_wall_time(worker_factory):
    client = worker_factory("--wall-time", "2").client()
    if client.request("ping")["isolation"]["accounting"].startswith("per-process"):
        pytest.skip("this host offers no cgroups to count a session's CPU time")
    session = client.start()
    result = client.run(session, "import sys\nsys.stdout._stream._send("
                                 "{'type': 'done', 'status': 'ok'})\nwhile True: pass")
    assert result.status == "ok"  # the forged done, as far as the client can tell
    ended, _ = client.receive(timeout=15)
    assert ended["type"] == "session_ended" and ended["reason"] == "limit"


def mem_available_kb() -> int:
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("MemAvailable"))


def sample_until(finished: threading.Event, samples: list[int]) -> None:
    while not finished.wait(0.05):
        samples.append(mem_available_kb())


def test_memory_counts_for_all_of_a_sessions_processes(worker_factory):
    client = worker_factory("--memory-mb", "200", "--disk-mb", "64").client()
    if client.request("ping")["isolation"]["accounting"].startswith("per-process"):
        pytest.skip("this host offers no cgroups to count a session's memory")
    session = client.start()
    before = mem_available_kb()
    low = [before]
    watcher = client.execute(session, "import os, time\npids = []\nfor i in range(4):\n"
                                      "    pid = os.fork()\n    if pid == 0:\n"
                                      "        b = bytearray(180 << 20)\n"
                                      "        for j in range(0, len(b), 4096): b[j] = 1\n"
                                      "        time.sleep(3)\n        os._exit(0)\n"
                                      "    pids.append(pid)\n"
                                      "print([os.waitpid(p, 0)[1] for p in pids])")
    finished = threading.Event()
    sampler = threading.Thread(target=sample_until, args=(finished, low))
    sampler.start()
    try:
        messages = client.collect(watcher, timeout=60)
    finally:
        finished.set()
        sampler.join(timeout=5)
    statuses = eval(next(m["text"] for m, _ in messages if m["type"] == "stream"))
    assert any(os.WIFSIGNALED(s) and os.WTERMSIG(s) == signal.SIGKILL for s in statuses)
    assert before - min(low) < 500_000  # 4 x 180 MB never all lived at once


def test_the_host_is_read_only_and_run_lock_is_private(worker_factory):
    client = worker_factory().client()
    a, b = client.start(), client.start()
    assert value(client, a, "import os\nopen('/run/lock/mine', 'w').write('a')\n"
                            "os.listdir('/run/lock')") == ["mine"]
    assert value(client, b, "import os\nos.listdir('/run/lock')") == []
    assert not Path("/run/lock/mine").exists()
    for path in ("/etc/salvus-test", "/var/lib/salvus-test", "/usr/salvus-test"):
        result = client.run(b, f"open({path!r}, 'w')")
        assert result.of("error")[0]["ename"] in ("OSError", "PermissionError")
        assert "Read-only file system" in result.of("error")[0]["evalue"] or \
            "Permission denied" in result.of("error")[0]["evalue"]


@pytest.mark.parametrize("command", [["unshare", "-Ur", "true"], ["unshare", "-m", "true"],
                                     ["unshare", "-n", "true"]])
def test_a_session_cannot_make_namespaces_of_its_own(client, command):
    session = client.start()
    result = client.run(session, f"import subprocess\nsubprocess.run({command!r}, "
                                 "capture_output=True, text=True).stderr")
    assert "Operation not permitted" in result.text


def test_a_worker_with_fewer_uids_than_its_limit_is_full_when_its_uids_are(worker_factory):
    worker = worker_factory("--max-sessions", "32", "--spares", "0", uids=2)
    client = worker.client()
    worker.watch(client, client.start())  # watched: neither may make room
    assert client.request("ping")["load"] == 0.5  # frontends see it filling up
    worker.watch(client, client.start())
    assert client.request("ping")["load"] == 1.0
    reply = client.request("start")
    assert reply["type"] == "error" and reply["code"] == "busy"
    assert "limit of 2 sessions" in reply["message"]
