"""A real frontend process (python -m web) for tests, and a websocket client."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from simple_websocket import Client as WsClient
from simple_websocket import ConnectionClosed

from tests.helpers import terminate
from tests.worker_client import PUBLISHERS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebProcess:
    """``python -m web`` with the workers given as (name, endpoint); ``keys``
    (tests.worker_client.Keys) are the workers' server key and the client key
    they allow, which this frontend uses."""

    def __init__(self, folder: Path, workers: list[tuple[str, str]], dsn: str | None,
                 *extra: str, name: str = "webtest", keys=None):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.keys = keys
        self.dsn = dsn
        self.workers_file = folder / "workers.json"
        self.write_workers(workers)
        database = []
        if dsn is not None:
            (folder / "dsn").write_text(dsn)
            database = ["--dsn-file", str(folder / "dsn")]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / f"{name}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "web", "--port", str(self.port), "--name", name,
                 "--workers-file", str(self.workers_file), *database,
                 *(["--curve-key", str(keys.client_secret)] if keys else []), *extra],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def write_workers(self, workers: list[tuple[str, str]]) -> None:
        temp = self.workers_file.with_suffix(".tmp")
        key = self.keys.server_public.decode() if self.keys else ""
        temp.write_text(json.dumps([{"name": n, "endpoint": e, "server_key": key,
                                     "publish": PUBLISHERS.get(e)} for n, e in workers]))
        temp.replace(self.workers_file)

    def health(self) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"frontend exited: {self.log.read_text()}")
            try:
                status, body = self.health()
                if status == 200 and body["workers"] > 0:
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"frontend not ready: {self.log.read_text()}")

    def stop(self) -> None:
        terminate(self.proc, timeout=10)


def handshake(port: int, headers: dict[str, str]) -> int:
    """The status a websocket handshake with ``headers`` gets (101: opened)."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/ws", headers={
            "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", **headers})
        return connection.getresponse().status
    finally:
        connection.close()


class Frontend:
    """Where a frontend listens, when no WebProcess owns it (an appliance's)."""

    def __init__(self, port: int):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"


class Browserish:
    """The browser protocol over a real websocket, as the page speaks it."""

    def __init__(self, web: WebProcess, cookie: str = "browser=test",
                 headers: dict | None = None):
        self.cookie = cookie
        self.session: str | None = None  # once attached
        self.ws = WsClient.connect(f"ws://127.0.0.1:{web.port}/ws",
                                   headers={"Cookie": f"salvus_{cookie}", **(headers or {})})
        self.last_seq = 0
        self.backlog: list[dict] = []

    def send(self, **message) -> None:
        self.ws.send(json.dumps(message))

    def send_raw(self, frame) -> None:
        self.ws.send(frame)

    def receive(self, timeout: float = 30) -> dict:
        if self.backlog:
            return self.backlog.pop(0)
        frame = self.ws.receive(timeout=timeout)
        if frame is None:
            raise TimeoutError(f"no message within {timeout}s")
        message = json.loads(frame)
        self.last_seq = max(self.last_seq, message.get("seq", 0))
        return message

    def open(self, session: str | None = None, last_seq: int = 0) -> dict:
        self.send(type="open", **({"session": session} if session else {}), last_seq=last_seq)
        while True:
            message = self.receive()
            if message["type"] in ("attached", "protocol_error"):
                self.session = message.get("session", self.session)
                return message
            self.backlog.append(message)

    def run(self, cell: str, code: str, timeout: float = 60) -> list[dict]:
        self.send(type="execute", cell=cell, code=code)
        return self.until_done(cell, timeout)

    def until_done(self, cell: str, timeout: float = 60) -> list[dict]:
        got = []
        deadline = time.monotonic() + timeout
        while True:
            message = self.receive(max(deadline - time.monotonic(), 0.01))
            if message.get("cell") == cell:
                got.append(message)
                if message["type"] == "done":
                    return got

    def close(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            self.ws.close()


class RawBrowser:
    """A browser that reads only when asked: a plain socket with a small
    receive buffer and a websocket client of a few lines (no background
    reader that would buffer for it), to play a slow connection."""

    def __init__(self, port: int, cookie: str, rcvbuf: int = 16 * 1024):
        import base64
        import os

        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect
        self.sock.settimeout(30)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13"
            f"\r\nCookie: salvus_{cookie}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        assert b" 101 " in head.split(b"\r\n")[0], head

    def send(self, **message) -> None:
        import os
        import struct

        payload = json.dumps(message).encode()
        mask = os.urandom(4)
        length = bytes([0x80 | len(payload)]) if len(payload) < 126 else \
            bytes([0x80 | 126]) + struct.pack("!H", len(payload))
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes([0x81]) + length + mask + masked)

    def _exact(self, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            if not chunk:
                raise ConnectionError("closed by the frontend")
            data += chunk
        return data

    def receive(self) -> dict:
        """The next JSON message (pings are skipped: the frontend pings seldom)."""
        import struct

        while True:
            first, second = self._exact(2)
            length = second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", self._exact(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", self._exact(8))
            payload = self._exact(length)
            if first & 0x0F == 0x1:
                return json.loads(payload)

    def close(self) -> None:
        self.sock.close()
