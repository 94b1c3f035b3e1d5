"""The frontend's view of the compute workers.

Workers are listed in a JSON file that salvusctl writes (``[{"name": ...,
"endpoint": ..., "publish": ..., "server_key": <Z85 CURVE public key>},
...]``); the pool re-reads it when it changes, so adding or removing a worker
needs no restart. Each worker gets one CURVE-encrypted DEALER socket with a
stable routing id (the frontend's name and host) for requests, and one SUB
socket on its publisher, subscribed to the sessions this frontend's pages
follow (``watch``). A ping every second tells who is alive, how loaded, and
whether it restarted (its pid changed: its sessions are gone).

What a worker sends is not trusted (it relays what sessions produce):
``protocol.parse_message`` validates every message, and an error while
handling one message costs that message only, logged once per kind, never
the reader. Sessions no frontend watches end in their worker after the
linger time, so none lives on without a page.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import gevent
import zmq.green as zmq
from gevent.event import AsyncResult

from sage_worker import curve, protocol
from sage_worker.once import OncePerKind
from web import html

PING_EVERY = 1.0
# A worker that has not answered a ping for this long is given up; a loaded
# one answers within it (it serves a burst of session starts a few at a time).
DEAD_AFTER = 5.0
RECEIVE_HWM = 1000  # messages the socket holds for us before the worker holds back
SEND_HWM = 1000
_ids = itertools.count(1)


class WorkerUnavailable(Exception):
    """A worker does not take requests now (gone, stopped, or not reading)."""


class WorkerLink:
    def __init__(self, name: str, endpoint: str, server_key: bytes | None, context,
                 client: WorkerClient, say: Callable[[str], None], publish: str | None = None):
        self.name = name
        self.endpoint = endpoint
        self.publish = publish
        self.server_key = server_key
        self.client = client
        self.say = say
        self.problem = OncePerKind(say)
        self.sock = context.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.rcvhwm = RECEIVE_HWM
        self.sock.sndhwm = SEND_HWM
        self.sock.routing_id = client.identity
        if client.key is not None and server_key is not None:
            curve.connect_as(self.sock, client.key, server_key)
        self.sock.connect(endpoint)
        self.sub = context.socket(zmq.SUB)
        self.sub.linger = 0
        self.sub.rcvhwm = RECEIVE_HWM * 10
        if client.key is not None and server_key is not None:
            curve.connect_as(self.sub, client.key, server_key)
        if publish:
            self.sub.connect(publish)
        self.watched: set[str] = set()
        self.pending: dict[str, AsyncResult] = {}
        self.last_pong = 0.0
        self.pid: int | None = None
        self.load = 1.0
        self.engine: str | None = None
        self.isolation: dict | None = None
        self.lost = True  # until the first pong: then it claims what we hold (nothing)
        self.greenlets: list = []

    def start(self) -> None:
        self.greenlets = [gevent.spawn(self._read), gevent.spawn(self._ping),
                          gevent.spawn(self._read_published)]

    def watch(self, session: str) -> None:
        """Receive this session's messages (what comes before the subscription
        reaches the worker is taken from its log)."""
        if session not in self.watched:
            self.watched.add(session)
            self.sub.setsockopt(zmq.SUBSCRIBE, session.encode())

    def unwatch(self, session: str) -> None:
        if session in self.watched:
            self.watched.discard(session)
            with contextlib.suppress(zmq.ZMQError):
                self.sub.setsockopt(zmq.UNSUBSCRIBE, session.encode())

    @property
    def alive(self) -> bool:
        return time.monotonic() - self.last_pong < DEAD_AFTER

    def send(self, kind: str, request_id: str | None = None, **fields) -> str:
        """A request whose reply nobody waits for (errors go to on_message)."""
        request_id = request_id or f"{self.name}-{next(_ids)}"
        try:
            self.sock.send_multipart(protocol.request(kind, request_id, **fields),
                                     zmq.NOBLOCK)
        except zmq.Again:
            # Nothing queues without bound for a worker that does not read.
            raise WorkerUnavailable(f"{self.name} is not taking requests") from None
        return request_id

    def request(self, kind: str, timeout: float = 5.0, **fields) -> dict:
        request_id = f"{self.name}-{next(_ids)}"
        result = self.pending[request_id] = AsyncResult()
        try:
            self.send(kind, request_id, **fields)
            return result.get(timeout=timeout)
        finally:
            self.pending.pop(request_id, None)

    def _read(self) -> None:
        while True:
            frames = self.sock.recv_multipart()
            try:
                self._dispatch(frames)
            except Exception as exc:  # one bad message costs that message only
                where = traceback.extract_tb(exc.__traceback__)[-1]
                self.problem(f"{type(exc).__name__}@{where.filename}:{where.lineno}",
                             f"{self.name}: could not handle a message: {exc!r} at "
                             f"{where.filename}:{where.lineno}")

    def _read_published(self) -> None:
        while True:
            frames = self.sub.recv_multipart()
            try:
                message, blob = protocol.parse_published(frames)
                if message["type"] == "result":
                    message["data"] = html.clean_result(message["data"])
                self.client.on_message(self, message, blob)
            except protocol.ProtocolError as err:
                self.problem(f"invalid:{err.message[:40]}",
                             f"{self.name}: dropped an invalid message ({err.message})")
            except Exception as exc:  # one bad message costs that message only
                where = traceback.extract_tb(exc.__traceback__)[-1]
                self.problem(f"{type(exc).__name__}@{where.filename}:{where.lineno}",
                             f"{self.name}: could not handle a message: {exc!r} at "
                             f"{where.filename}:{where.lineno}")

    def _dispatch(self, frames: list[bytes]) -> None:
        try:
            message, blob = protocol.parse_message(frames)
        except protocol.ProtocolError as err:
            self.problem(f"invalid:{err.message[:40]}",
                         f"{self.name}: dropped an invalid message ({err.message})")
            return
        if message["type"] == "result":  # what a session made: its HTML goes inert here
            message["data"] = html.clean_result(message["data"])
        waiter = self.pending.pop(message.get("re"), None) if message.get("re") else None
        if waiter is not None:
            waiter.set(message)
        elif message["type"] == "pong":
            self._pong(message)
        elif "session" in message or message["type"] == "error":
            self.client.on_message(self, message, blob)

    def _pong(self, message: dict) -> None:
        if self.pid is not None and message.get("pid") != self.pid:
            self.say(f"{self.name}: restarted (pid {self.pid} -> {message.get('pid')})")
            self.client.on_lost(self, "the worker restarted")
        self.pid = message.get("pid")
        self.engine = message.get("engine")
        self.isolation = message.get("isolation")
        load = message.get("load", 1.0)
        self.load = float(load) if isinstance(load, int | float) else 1.0
        self.last_pong = time.monotonic()
        self.lost = False

    def _ping(self) -> None:
        while True:
            # A full queue means it is not answering: noticed below.
            with contextlib.suppress(WorkerUnavailable):
                self.send("ping", f"ping-{next(_ids)}")
            gevent.sleep(PING_EVERY)
            if not self.alive and self.last_pong and not self.lost:
                self.lost = True
                self.say(f"{self.name}: not answering; its sessions are lost")
                self.client.on_lost(self, "the worker stopped answering")

    def close(self) -> None:
        gevent.killall(self.greenlets)
        self.sock.close(linger=0)
        self.sub.close(linger=0)


class WorkerClient:
    """Who this frontend is to the workers, and where their news goes."""

    def __init__(self, name: str, key: curve.KeyPair | None, on_message: Callable,
                 on_lost: Callable):
        self.identity = f"{name}@{socket.gethostname()}".encode()
        self.key = key
        self.on_message = on_message  # (link, message, blob): session output, refusals
        self.on_lost = on_lost  # (link, why): its sessions are gone


class WorkerPool:
    def __init__(self, workers_file: str | Path, client: WorkerClient,
                 say: Callable[[str], None]):
        self.path = Path(workers_file)
        self.client = client
        self.say = say
        self.context = zmq.Context.instance()
        self.links: dict[str, WorkerLink] = {}
        self.signature = None
        self.watcher = None

    def start(self) -> None:
        self.reload()
        self.watcher = gevent.spawn(self._watch)

    def _read_file(self) -> dict[str, tuple[str, bytes | None, str | None]]:
        try:
            entries = json.loads(self.path.read_text())
            return {e["name"]: (e["endpoint"], e.get("server_key", "").encode() or None,
                                e.get("publish")) for e in entries}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            self.say(f"workers file {self.path} unreadable ({exc}); keeping the old list")
            return {name: (link.endpoint, link.server_key, link.publish)
                    for name, link in self.links.items()}

    def reload(self) -> None:
        try:
            stat = self.path.stat()
            self.signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        except OSError:
            self.signature = None
        wanted = self._read_file()
        for name in list(self.links):
            link = self.links[name]
            if wanted.get(name) != (link.endpoint, link.server_key, link.publish):
                del self.links[name]
                self.say(f"{name}: removed from the workers file")
                self.client.on_lost(link, "the worker was removed")
                link.close()
        for name, (endpoint, server_key, publish) in wanted.items():
            if name not in self.links:
                self.say(f"{name}: added ({endpoint})")
                link = WorkerLink(name, endpoint, server_key, self.context, self.client,
                                  self.say, publish)
                self.links[name] = link
                link.start()

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

    def live(self, engine: str | None = None) -> list[WorkerLink]:
        """Every live worker (running ``engine``, if given), least loaded first."""
        return sorted((link for link in self.links.values()
                       if link.alive and engine in (None, link.engine)),
                      key=lambda link: link.load)

    def live_count(self) -> int:
        return sum(link.alive for link in self.links.values())

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.kill()
        for link in self.links.values():
            link.close()
