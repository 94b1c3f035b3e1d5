"""``salvusctl message``: a text for browsers, through the frontends' bus.

salvusctl joins the bus (web/bus.py owns its format) for as long as it
sends: it binds the message endpoint from the frontends file as a CURVE
server (every frontend subscribes to it), listens to every frontend's
publisher for beats and acks, waits until the live frontends have
subscribed (ZeroMQ drops what is published before a subscriber is there),
publishes the message once, and counts the acks.
"""

from __future__ import annotations

import secrets
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import zmq

from sage_worker import curve
from salvusctl.errors import NotDelivered, PortInUse
from web import bus

LISTEN = 2.5  # seconds to hear every frontend's beat and subscription
ACK_WAIT = 3.0  # seconds the live frontends have to say how many browsers got it


@dataclass
class Outcome:
    delivered: dict[str, int] = field(default_factory=dict)  # frontend -> browsers
    silent: list[str] = field(default_factory=list)  # frontends that never answered

    @property
    def total(self) -> int:
        return sum(self.delivered.values())


def parse_target(text: str) -> tuple[str, str | None]:
    """``all`` or ``KIND:ID`` (browser, session, account) -> (to, target)."""
    if text == "all":
        return "all", None
    kind, _, target = text.partition(":")
    if kind not in bus.TARGETS or kind == "all" or not target or len(target) > bus.MAX_ID:
        raise ValueError(f"--to {text!r}: write all, browser:ID, session:ID or account:ID")
    return kind, target


def send(frontends_file: Path, key_file: Path, to: str, target: str | None,
         text: str) -> Outcome:
    directory = bus.Directory.read(frontends_file)
    pair = curve.load_pair(key_file)
    body = bus.new_message(to, target, text, "admin")
    sender = f"salvusctl@{socket.gethostname()}:{secrets.token_hex(3)}"
    context = zmq.Context()
    sockets: list[zmq.Socket] = []
    try:
        zap = _socket(context, zmq.REP, sockets)
        zap.bind(curve.ZAP_ENDPOINT)
        publisher = _socket(context, zmq.XPUB, sockets)
        publisher.setsockopt(zmq.XPUB_VERBOSE, 1)  # one event per subscriber
        curve.serve_as(publisher, pair)
        try:
            publisher.bind(directory.message_endpoint)
        except zmq.ZMQError as exc:
            raise PortInUse(f"cannot bind {directory.message_endpoint} ({exc}); another "
                            "salvusctl message may be sending: try again") from None
        listener = _socket(context, zmq.SUB, sockets)
        curve.connect_as(listener, pair, pair.public)
        listener.setsockopt(zmq.SUBSCRIBE, b"")
        for peer in directory.frontends:
            listener.curve_serverkey = peer.key
            listener.connect(peer.endpoint)
        live = _wait_for_subscribers(zap, publisher, listener, pair, directory)
        publisher.send_multipart(bus.encode(b"msg", sender, secrets.token_hex(4), 1, body))
        return _collect_acks(zap, listener, pair, body["id"], sender, live, directory)
    finally:
        for sock in sockets:
            sock.close(linger=0)
        context.term()


def _socket(context: zmq.Context, kind: int, sockets: list) -> zmq.Socket:
    sock = context.socket(kind)
    sock.linger = 0
    sockets.append(sock)
    return sock


def _wait_for_subscribers(zap, publisher, listener, pair, directory) -> set[str]:
    """The frontends that beat; returns once as many have subscribed to us."""
    poller = zmq.Poller()
    for sock in (zap, publisher, listener):
        poller.register(sock, zmq.POLLIN)
    live: set[str] = set()
    subscribed = 0
    deadline = time.monotonic() + LISTEN
    names = {p.name for p in directory.frontends}
    while time.monotonic() < deadline:
        if live == names and subscribed >= len(live):
            break
        for sock, _ in poller.poll(100):
            if sock is zap:
                curve.answer(zap, {pair.public})
            elif sock is publisher:
                event = publisher.recv()
                subscribed += event[:1] == b"\x01"
            else:
                kind, header, _ = _decoded(listener.recv_multipart())
                if kind == b"beat" and header["from"] in names:
                    live.add(header["from"])
    return live


def _collect_acks(zap, listener, pair, message_id: str, sender: str, live: set[str],
                  directory) -> Outcome:
    outcome = Outcome()
    poller = zmq.Poller()
    poller.register(zap, zmq.POLLIN)
    poller.register(listener, zmq.POLLIN)
    deadline = time.monotonic() + ACK_WAIT
    while set(outcome.delivered) < live and time.monotonic() < deadline:
        for sock, _ in poller.poll(100):
            if sock is zap:
                curve.answer(zap, {pair.public})
                continue
            kind, header, body = _decoded(listener.recv_multipart())
            if kind == b"ack" and body["id"] == message_id and body["origin"] == sender:
                outcome.delivered[header["from"]] = body["delivered"]
    outcome.silent = sorted(p.name for p in directory.frontends
                            if p.name not in outcome.delivered)
    if not outcome.delivered:
        raise NotDelivered("no frontend answered, so no browser got the message; start "
                           "the frontends (`salvusctl start web`) and send it again")
    return outcome


def _decoded(frames: list[bytes]) -> tuple[bytes, dict, dict]:
    try:
        return bus.decode(frames)
    except bus.BusError:
        return b"", {}, {}
