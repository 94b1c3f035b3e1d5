"""A test client for a real worker process over real ZeroMQ sockets."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

import zmq

from sage_worker import curve, protocol
from tests.helpers import terminate

_ids = itertools.count(1)
_workers = itertools.count()
UIDS = 64  # session uids per test worker (by default)
UID_SPAN = 256  # uids set aside per worker, so ranges never overlap
TEST_UIDS = 1_000_000_000  # test workers' uids start here


# Each test worker's publisher, by its endpoint (a workers file names both).
PUBLISHERS: dict[str, str] = {}


class WorkerProcess:
    """``python -m sage_worker`` on a random loopback port; always cleaned up."""

    def __init__(self, folder: Path, engine: str = "python", *extra: str,
                 env: dict | None = None, uids: int = UIDS, python: str = sys.executable,
                 user: int | None = None, sessions_dir: Path | None = None,
                 keys: Keys | None = None):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.sessions_dir = sessions_dir or folder / "sessions"
        self.log = folder / "worker.log"
        self.port = _free_port()
        # Distinct per live worker of this test process (and, by pid, of others),
        # and far above the ranges appliances get (salvusctl/uids.py): two
        # workers handing out the same uid would share a session's uid.
        self._uid_base = TEST_UIDS + ((os.getpid() % 4096) * 64 + next(_workers) % 64) * UID_SPAN
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.publish = f"tcp://127.0.0.1:{_free_port()}"
        PUBLISHERS[self.endpoint] = self.publish
        self.keys = keys or make_keys(folder / "keys")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [python, "-m", "sage_worker", "--endpoint", self.endpoint,
                 "--engine", engine, "--name", f"test{self.port}",
                 "--server-key", str(self.keys.server_secret),
                 "--clients", str(self.keys.clients),
                 "--sessions-dir", str(self.sessions_dir),
                 "--uid-range", f"{self.uid_base()}:{self.uid_base() + uids - 1}",
                 "--publish", self.publish, *extra],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})}, user=user, cwd=folder,
            )
        self.context = zmq.Context()
        self.clients: list[Client] = []
        self.subscribers: list[zmq.Socket] = []

    def uid_base(self) -> int:
        return self._uid_base

    def client(self, key: curve.KeyPair | None = None) -> Client:
        """A client with the allowed key (or ``key``: an unknown one is refused)."""
        client = Client(self.context, self.endpoint, key or self.keys.client,
                        self.keys.server_public)
        self.clients.append(client)
        return client

    def subscriber(self, session: str, key: curve.KeyPair | None = None) -> zmq.Socket:
        """A SUB socket on the worker's publisher, for one session's messages
        (closed by ``stop``)."""
        sock = self.context.socket(zmq.SUB)
        sock.linger = 0
        curve.connect_as(sock, key or self.keys.client, self.keys.server_public)
        sock.setsockopt(zmq.SUBSCRIBE, session.encode())
        sock.connect(self.publish)
        self.subscribers.append(sock)
        return sock

    def watch(self, client: Client, session: str) -> zmq.Socket:
        """Subscribe to a session's messages, as a frontend whose page follows
        it does; returns once the worker publishes them."""
        sub = self.subscriber(session)
        deadline = time.monotonic() + 10
        while not (client.run(session, "1") and sub.poll(100)):
            if time.monotonic() > deadline:
                raise AssertionError("the worker never saw the subscription")
        return sub

    def wait_ready(self, timeout: float = 120) -> None:
        client = self.client()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited: {self.log.read_text()}")
            try:
                client.request("ping", timeout=0.5)
                return
            except TimeoutError:
                continue
        raise AssertionError(f"worker not ready in {timeout}s: {self.log.read_text()}")

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        for sock in self.subscribers:
            sock.close(linger=0)
        terminate(self.proc)
        self.context.term()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Keys:
    """A test worker's CURVE keys: its own, and one allowed client's."""

    def __init__(self, folder: Path):
        self.server_public_file, self.server_secret = curve.create_pair(folder, "worker")
        self.server_public = curve.load_public(self.server_public_file)
        self.clients = folder / "clients"
        client_public, self.client_secret = curve.create_pair(folder, "client")
        self.clients.mkdir()
        client_public.replace(self.clients / client_public.name)
        self.client = curve.load_pair(self.client_secret)
        # Readable by whoever runs the program that uses them (a test may run
        # one as an unprivileged user).
        for path in (folder, self.clients):
            os.chmod(path, 0o755)


def make_keys(folder: Path) -> Keys:
    return Keys(folder)


def stranger_key() -> curve.KeyPair:
    public, secret = zmq.curve_keypair()
    return curve.KeyPair(public, secret)


class Client:
    def __init__(self, context: zmq.Context, endpoint: str, key: curve.KeyPair,
                 server_public: bytes):
        self.sock = context.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.sndtimeo = 5000  # a refused client has no peer to queue for: never hang
        curve.connect_as(self.sock, key, server_public)
        self.sock.connect(endpoint)
        self.backlog: list[tuple[dict, bytes | None]] = []

    def close(self) -> None:
        self.sock.close(linger=0)

    def send_raw(self, frames: list[bytes]) -> None:
        self.sock.send_multipart(frames)

    def receive(self, timeout: float = 30) -> tuple[dict, bytes | None]:
        if self.backlog:
            return self.backlog.pop(0)
        if not self.sock.poll(int(timeout * 1000)):
            raise TimeoutError(f"no message within {timeout}s")
        return protocol.parse_message(self.sock.recv_multipart())

    def request(self, kind: str, timeout: float = 30, **fields) -> dict:
        request_id = f"r{next(_ids)}"
        try:
            self.sock.send_multipart(protocol.request(kind, request_id, **fields))
        except zmq.Again:
            raise TimeoutError(f"could not send {kind}") from None
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no reply to {kind}")
            if not self.sock.poll(int(remaining * 1000)):
                raise TimeoutError(f"no reply to {kind}")
            message, blob = protocol.parse_message(self.sock.recv_multipart())
            if message.get("re") == request_id:
                return message
            self.backlog.append((message, blob))

    def start(self) -> str:
        reply = self.request("start")
        assert reply["type"] == "started", reply
        return reply["session"]

    def execute(self, session: str, code: str, **options) -> str:
        execution = f"e{next(_ids)}"
        self.sock.send_multipart(protocol.request("execute", f"r{next(_ids)}",
                                                  session=session, execution=execution,
                                                  code=code, **options))
        return execution

    def collect(self, execution: str, timeout: float = 60) -> list[tuple[dict, bytes | None]]:
        """Every message of one execution, through its done."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            message, blob = self.receive(max(deadline - time.monotonic(), 0.001))
            if message.get("execution") == execution:
                got.append((message, blob))
                if message["type"] == "done":
                    return got
            elif message.get("type") == "error" and "execution" not in message:
                raise AssertionError(f"error reply: {message}")

    def run(self, session: str, code: str, timeout: float = 60, **options) -> Result:
        return Result(self.collect(self.execute(session, code, **options), timeout))

    def complete(self, session: str, code: str, cursor: int | None = None) -> Result:
        execution = f"c{next(_ids)}"
        self.sock.send_multipart(protocol.request(
            "complete", f"r{next(_ids)}", session=session, execution=execution, code=code,
            cursor=len(code) if cursor is None else cursor))
        return Result(self.collect(execution, 30))


class Result:
    def __init__(self, messages: list[tuple[dict, bytes | None]]):
        self.messages = [m for m, _ in messages]
        self.blobs = [b for _, b in messages]

    def of(self, kind: str) -> list[dict]:
        return [m for m in self.messages if m["type"] == kind]

    @property
    def status(self) -> str:
        return self.messages[-1]["status"]

    @property
    def stdout(self) -> str:
        return "".join(m["text"] for m in self.of("stream") if m["name"] == "stdout")

    @property
    def stderr(self) -> str:
        return "".join(m["text"] for m in self.of("stream") if m["name"] == "stderr")

    @property
    def text(self) -> str | None:
        results = self.of("result")
        return results[-1]["data"]["text/plain"] if results else None
