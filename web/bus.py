"""The frontends' bus: a ZeroMQ PUB/SUB mesh that reaches any browser.

Each frontend binds a PUB socket and subscribes to every peer's, as listed
in the frontends file salvusctl writes (watched: frontends added or removed
take effect without a restart); each also subscribes to the endpoint that
``salvusctl message`` binds while it sends. Every link is CURVE-encrypted,
and a publisher answers only subscribers whose key is in its ZAP allow-list:
a peer with an unknown key gets nothing.

This module owns the bus's wire format. Every message is three frames::

    [ kind | header | body ]

    kind    b"msg"   a text for browsers
            b"ack"   how many browsers a frontend gave a msg to
            b"beat"  "I am alive" (every second): the tail of a stream is
                     checked too, and peers learn who serves
    header  JSON {"from": publisher name, "boot": id of its process,
                  "seq": 1, 2, 3 ... per publisher process, over all kinds}
    body    JSON object, by kind:
            msg   {"id", "to": "browser"|"session"|"account"|"all",
                   "target": id or null (for "all"), "text", "sender"}
            ack   {"id", "origin": publisher of the msg, "delivered": n}
            beat  {"http": this frontend's URL}

A subscriber tracks each publisher's seq: a jump means messages were lost
(a full queue, a link that broke); it is logged with the count and added to
``lost``, which /health reports. Nothing on the bus is lost silently.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import gevent
import zmq.green as zmq
from gevent.event import Event

from sage_worker import curve

KINDS = (b"msg", b"ack", b"beat")
TARGETS = ("browser", "session", "account", "all")
MAX_TEXT = 2000  # characters of one message to browsers
MAX_ID = 64
MAX_FRAME = 16 << 10
BEAT_EVERY = 1.0
HWM = 10000  # messages queued for one slow peer before it loses some (and says so)
ACKS_KEPT = 1000  # deliveries whose acks this frontend still counts
READ_TURN = 64  # bus messages read before other greenlets get a turn


class BusError(ValueError):
    """A bus message that is not well formed (dropped, counted, logged)."""


# ------------------------------------------------------------------ wire format


def encode(kind: bytes, sender: str, boot: str, seq: int, body: dict) -> list[bytes]:
    return [kind, json.dumps({"from": sender, "boot": boot, "seq": seq}).encode(),
            json.dumps(body, separators=(",", ":")).encode()]


def decode(frames: list[bytes]) -> tuple[bytes, dict, dict]:
    """(kind, header, body), validated; ``BusError`` otherwise."""
    if len(frames) != 3 or frames[0] not in KINDS or any(len(f) > MAX_FRAME for f in frames):
        raise BusError("not three frames of a known kind")
    try:
        header, body = json.loads(frames[1]), json.loads(frames[2])
    except ValueError:
        raise BusError("header or body is not JSON") from None
    if not (isinstance(header, dict) and isinstance(body, dict)):
        raise BusError("header and body must be objects")
    if not (_short(header.get("from")) and _short(header.get("boot"))
            and type(header.get("seq")) is int and header["seq"] > 0):
        raise BusError("bad header")
    kind = frames[0]
    if kind == b"msg":
        validate_message(body)
    elif kind == b"ack" and not (_short(body.get("id")) and _short(body.get("origin"))
                                 and type(body.get("delivered")) is int
                                 and body["delivered"] >= 0):
        raise BusError("bad ack")
    elif kind == b"beat" and not isinstance(body.get("http"), str):
        raise BusError("bad beat")
    return kind, header, body


def validate_message(body: dict) -> None:
    if not _short(body.get("id")) or body.get("to") not in TARGETS:
        raise BusError("a message needs an id and 'to' (browser, session, account or all)")
    if body["to"] == "all" and body.get("target") is not None:
        raise BusError("a message to all names no target")
    if body["to"] != "all" and not _short(body.get("target")):
        raise BusError(f"a message to a {body['to']} names it")
    text = body.get("text")
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
        raise BusError(f"the text must have 1 to {MAX_TEXT} characters")
    if not _short(body.get("sender")):
        raise BusError("a message names its sender")


def _short(value) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_ID


def new_message(to: str, target: str | None, text: str, sender: str) -> dict:
    body = {"id": secrets.token_hex(8), "to": to, "target": target, "text": text,
            "sender": sender}
    validate_message(body)
    return body


class SeqTracker:
    """Each publisher's last seq: how many of its messages never arrived."""

    def __init__(self):
        self.last: dict[str, tuple[str, int]] = {}  # publisher -> (boot, seq)

    def missed(self, header: dict) -> int:
        sender, boot, seq = header["from"], header["boot"], header["seq"]
        known = self.last.get(sender)
        self.last[sender] = (boot, seq)
        if known is None or known[0] != boot:
            return 0  # a publisher (or a new process of one) we start listening to
        return max(seq - known[1] - 1, 0)


# ------------------------------------------------------------------ peers


@dataclass(frozen=True)
class Peer:
    name: str
    endpoint: str  # its PUB socket
    key: bytes  # its CURVE public key (Z85)


@dataclass(frozen=True)
class Directory:
    """The frontends file salvusctl writes (salvusctl/programs.py): every
    frontend's bus endpoint, and the one salvusctl message binds."""

    frontends: tuple[Peer, ...]
    message_endpoint: str | None = None
    message_key: bytes | None = None

    @classmethod
    def read(cls, path: Path) -> Directory:
        data = json.loads(path.read_text())
        peers = tuple(Peer(f["name"], f["bus"], f["key"].encode()) for f in data["frontends"])
        admin = data.get("message") or {}
        return cls(peers, admin.get("endpoint"),
                   admin["key"].encode() if admin.get("key") else None)



# ------------------------------------------------------------------ the bus


@dataclass
class Delivery:
    """A message sent from here: how many browsers got it, per frontend."""

    id: str
    counts: dict[str, int] = field(default_factory=dict)
    answered: Event = field(default_factory=Event)

    @property
    def delivered(self) -> int:
        return sum(self.counts.values())


class Bus:
    def __init__(self, name: str, key: curve.KeyPair | None, allowed: set[bytes],
                 bind: str, directory_file: Path, deliver: Callable[[dict], int],
                 say: Callable[[str], None], http: str = ""):
        self.name = name
        self.key = key
        self.allowed = allowed
        self.bind = bind
        self.directory_file = Path(directory_file)
        self.deliver = deliver  # (msg body) -> browsers here that got it
        self.say = say
        self.http = http
        self.boot = secrets.token_hex(4)
        self.seq = 0
        self.lost = 0  # messages of peers that never arrived
        self.refused: set[bytes] = set()  # keys ZAP turned away (logged once each)
        self.invalid = 0
        self.tracker = SeqTracker()
        self.deliveries: dict[str, Delivery] = {}
        self.peers: dict[str, tuple[Peer, zmq.Socket]] = {}
        self.beats: dict[str, tuple[float, str]] = {}  # peer -> (when, its URL)
        self.admin: tuple[str, bytes] | None = None
        self.admin_sock = None
        self.signature = None
        self.context = zmq.Context.instance()
        self.pub = None
        self.zap = None
        self.greenlets: list = []

    # -- running

    def start(self) -> None:
        zap = None
        if self.key is not None:
            zap = self.zap = self.context.socket(zmq.REP)
            zap.linger = 0
            zap.bind(curve.ZAP_ENDPOINT)
        self.pub = self.context.socket(zmq.PUB)
        self.pub.linger = 0
        self.pub.sndhwm = HWM
        if self.key is not None:
            curve.serve_as(self.pub, self.key)
        self.pub.bind(self.bind)
        self.greenlets = [gevent.spawn(self._beat), gevent.spawn(self._watch)]
        if zap is not None:
            self.greenlets.append(gevent.spawn(self._answer_zap, zap))

    def close(self) -> None:
        gevent.killall(self.greenlets)
        for _, sock in self.peers.values():
            sock.close(linger=0)
        if self.admin_sock is not None:
            self.admin_sock.close(linger=0)
        if self.pub is not None:
            self.pub.close(linger=0)
        if self.zap is not None:
            self.zap.close(linger=0)

    def _answer_zap(self, zap) -> None:
        while True:
            refused = curve.answer(zap, self.allowed)
            if refused and refused not in self.refused:
                self.refused.add(refused)
                self.say(f"bus: refused a subscriber with an unknown key "
                         f"{refused[:8].decode(errors='replace')}...")

    # -- publishing

    def publish(self, kind: bytes, body: dict) -> None:
        self.seq += 1
        with contextlib.suppress(zmq.Again):  # full for a slow peer: its seq check sees it
            self.pub.send_multipart(encode(kind, self.name, self.boot, self.seq, body),
                                    zmq.NOBLOCK)

    def message(self, to: str, target: str | None, text: str,
                sender: str | None = None) -> Delivery:
        """Send ``text`` to a browser, a session's browsers, an account's or
        all, wherever they are connected. The delivery's counts fill in as
        peers answer; ``answered`` is set when every live peer has."""
        body = new_message(to, target, text, sender or self.name)
        delivery = Delivery(body["id"])
        self.deliveries[body["id"]] = delivery
        while len(self.deliveries) > ACKS_KEPT:
            self.deliveries.pop(next(iter(self.deliveries)))
        self.publish(b"msg", body)
        delivery.counts[self.name] = self.deliver(body)
        if not self.live_peers():
            delivery.answered.set()
        return delivery

    def live_urls(self) -> list[str]:
        """This frontend's URL, then its live peers': where a page may go."""
        now = time.monotonic()
        peers = sorted(url for when, url in self.beats.values()
                       if now - when < 3 * BEAT_EVERY and url)
        return [self.http, *peers] if self.http else peers

    def live_peers(self) -> list[str]:
        now = time.monotonic()
        return [name for name, (when, _) in self.beats.items() if now - when < 3 * BEAT_EVERY]

    def _beat(self) -> None:
        while True:
            self.publish(b"beat", {"http": self.http})
            gevent.sleep(BEAT_EVERY)

    # -- subscribing

    def _watch(self) -> None:
        while True:
            with contextlib.suppress(OSError):
                stat = self.directory_file.stat()
                signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
                if signature != self.signature:
                    self.signature = signature
                    self.reload()
            gevent.sleep(0.5)

    def reload(self) -> None:
        try:
            directory = Directory.read(self.directory_file)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            self.say(f"bus: frontends file {self.directory_file} unreadable ({exc}); "
                     "keeping the old list")
            return
        wanted = {p.name: p for p in directory.frontends if p.name != self.name}
        for name in list(self.peers):
            if self.peers[name][0] != wanted.get(name):
                self.peers.pop(name)[1].close(linger=0)
                self.beats.pop(name, None)
        for name, peer in wanted.items():
            if name not in self.peers:
                self.peers[name] = (peer, self._subscribe(peer.endpoint, peer.key))
        admin = (directory.message_endpoint, directory.message_key) \
            if directory.message_endpoint else None
        if admin != self.admin:
            if self.admin_sock is not None:
                self.admin_sock.close(linger=0)
            self.admin = admin
            self.admin_sock = self._subscribe(*admin) if admin else None

    def _subscribe(self, endpoint: str, server_key: bytes | None):
        sock = self.context.socket(zmq.SUB)
        sock.linger = 0
        sock.rcvhwm = HWM
        sock.reconnect_ivl_max = 1000
        if self.key is not None and server_key:
            curve.connect_as(sock, self.key, server_key)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(endpoint)
        self.greenlets.append(gevent.spawn(self._read, sock))
        return sock

    def _read(self, sock) -> None:
        # zmq.green's recv returns without yielding while messages wait: a
        # backlog would hold the frontend (websockets, pongs, /health, the
        # workers' pings) until it is read. Other greenlets run between turns.
        with contextlib.suppress(zmq.ZMQError):  # closed: its peer was removed
            while True:
                for _ in range(READ_TURN):
                    self.receive(sock.recv_multipart())
                gevent.sleep(0)

    def receive(self, frames: list[bytes]) -> None:
        try:
            kind, header, body = decode(frames)
        except BusError as err:
            self.invalid += 1
            if self.invalid in (1, 10, 100, 1000):
                self.say(f"bus: dropped {self.invalid} malformed messages (last: {err})")
            return
        missed = self.tracker.missed(header)
        if missed:
            self.lost += missed
            self.say(f"bus: {missed} messages from {header['from']} never arrived "
                     f"(before its seq {header['seq']}; {self.lost} lost in all)")
        if kind == b"beat":
            self.beats[header["from"]] = (time.monotonic(), body["http"])
        elif kind == b"msg":
            self.publish(b"ack", {"id": body["id"], "origin": header["from"],
                                  "delivered": self.deliver(body)})
        elif kind == b"ack" and body["origin"] == self.name:
            delivery = self.deliveries.get(body["id"])
            if delivery is not None:
                delivery.counts[header["from"]] = body["delivered"]
                if set(self.live_peers()) <= set(delivery.counts):
                    delivery.answered.set()
