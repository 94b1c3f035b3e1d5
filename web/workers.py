"""The frontend's view of the compute workers.

Workers are listed in a JSON file that salvusctl writes
(``[{"name": ..., "endpoint": ...}, ...]``); the pool re-reads it when it
changes, so adding or removing a worker needs no restart. Each worker gets one
DEALER socket; a ping every second tells who is alive, how loaded, and
whether it restarted (its pid changed: its sessions are gone).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path

import gevent
import zmq.green as zmq
from gevent.event import AsyncResult

from sage_worker import protocol

PING_EVERY = 1.0
DEAD_AFTER = 3.0
_ids = itertools.count(1)


class WorkerLink:
    def __init__(self, name: str, endpoint: str, context, on_message: Callable,
                 on_lost: Callable, say: Callable[[str], None]):
        self.name = name
        self.endpoint = endpoint
        self.on_message = on_message  # (link, message, blob) for session output
        self.on_lost = on_lost  # (link, why) when its sessions are gone
        self.say = say
        self.sock = context.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.connect(endpoint)
        self.pending: dict[str, AsyncResult] = {}
        self.last_pong = 0.0
        self.pid: int | None = None
        self.load = 1.0
        self.engine: str | None = None
        self.reported_down = False
        self.greenlets = [gevent.spawn(self._read), gevent.spawn(self._ping)]

    @property
    def alive(self) -> bool:
        return time.monotonic() - self.last_pong < DEAD_AFTER

    def send(self, kind: str, request_id: str | None = None, **fields) -> str:
        """A request whose reply nobody waits for (errors go to on_message)."""
        request_id = request_id or f"{self.name}-{next(_ids)}"
        self.sock.send_multipart(protocol.request(kind, request_id, **fields))
        return request_id

    def request(self, kind: str, timeout: float = 5.0, **fields) -> dict:
        request_id = f"{self.name}-{next(_ids)}"
        result = self.pending[request_id] = AsyncResult()
        try:
            self.sock.send_multipart(protocol.request(kind, request_id, **fields))
            return result.get(timeout=timeout)
        finally:
            self.pending.pop(request_id, None)

    def _read(self) -> None:
        while True:
            frames = self.sock.recv_multipart()
            try:
                message, blob = protocol.parse_message(frames)
            except (protocol.ProtocolError, ValueError) as exc:
                self.say(f"{self.name}: ignored a bad message ({exc})")
                continue
            waiter = self.pending.pop(message.get("re"), None) if message.get("re") else None
            if waiter is not None:
                waiter.set(message)
            elif message.get("type") == "pong":
                self._pong(message)
            elif "session" in message or message.get("type") == "error":
                self.on_message(self, message, blob)

    def _pong(self, message: dict) -> None:
        if self.pid is not None and message.get("pid") != self.pid:
            self.say(f"{self.name}: restarted (pid {self.pid} -> {message.get('pid')})")
            self.on_lost(self, "the worker restarted")
        self.pid = message.get("pid")
        self.engine = message.get("engine")
        self.load = float(message.get("load", 1.0))
        self.last_pong = time.monotonic()
        self.reported_down = False

    def _ping(self) -> None:
        while True:
            self.sock.send_multipart(protocol.request("ping", f"ping-{next(_ids)}"))
            gevent.sleep(PING_EVERY)
            if not self.alive and self.last_pong and not self.reported_down:
                self.reported_down = True
                self.say(f"{self.name}: not answering; its sessions are lost")
                self.on_lost(self, "the worker stopped answering")

    def close(self) -> None:
        gevent.killall(self.greenlets)
        self.sock.close(linger=0)


class WorkerPool:
    def __init__(self, workers_file: str | Path, on_message: Callable, on_lost: Callable,
                 say: Callable[[str], None]):
        self.path = Path(workers_file)
        self.on_message = on_message
        self.on_lost = on_lost
        self.say = say
        self.context = zmq.Context.instance()
        self.links: dict[str, WorkerLink] = {}
        self.signature = None
        self.reload()
        self.watcher = gevent.spawn(self._watch)

    def _read_file(self) -> dict[str, str]:
        try:
            entries = json.loads(self.path.read_text())
            return {e["name"]: e["endpoint"] for e in entries}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self.say(f"workers file {self.path} unreadable ({exc}); keeping the old list")
            return {name: link.endpoint for name, link in self.links.items()}

    def reload(self) -> None:
        try:
            stat = self.path.stat()
            self.signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        except OSError:
            self.signature = None
        wanted = self._read_file()
        for name in list(self.links):
            if wanted.get(name) != self.links[name].endpoint:
                link = self.links.pop(name)
                self.say(f"{name}: removed from the workers file")
                self.on_lost(link, "the worker was removed")
                link.close()
        for name, endpoint in wanted.items():
            if name not in self.links:
                self.say(f"{name}: added ({endpoint})")
                self.links[name] = WorkerLink(name, endpoint, self.context, self.on_message,
                                              self.on_lost, self.say)

    def _watch(self) -> None:
        while True:
            gevent.sleep(0.5)
            try:
                stat = self.path.stat()
                signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
            except OSError:
                continue
            if signature != self.signature:
                self.reload()

    def choose(self, engine: str | None = None) -> list[WorkerLink]:
        """Live workers with room (running ``engine``, if given), least loaded first."""
        live = [link for link in self.links.values()
                if link.alive and link.load < 1.0 and engine in (None, link.engine)]
        return sorted(live, key=lambda link: link.load)

    def live_count(self) -> int:
        return sum(link.alive for link in self.links.values())

    def close(self) -> None:
        self.watcher.kill()
        for link in self.links.values():
            link.close()
