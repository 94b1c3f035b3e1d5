"""CURVE keys of a worker and its clients, and the worker's ZAP allow-list.

Only peers whose public key is in the allow-list may talk to a worker: on one
host as well as across hosts, so that no other local user (and no session,
whatever its network) can start sessions or run code. salvusctl init makes
the keys; their files are ZeroMQ certificates (``NAME.key`` holds the public
key, ``NAME.key_secret`` both).

ZAP (ZeroMQ RFC 27): libzmq asks ``inproc://zeromq.zap.01`` about every new
connection, in frames::

    [ "1.0" | request id | domain | address | routing id | "CURVE" | client key (32 bytes) ]

and the answer is::

    [ "1.0" | request id | "200" or "400" | status text | user id | metadata ]

The worker answers in its own poll loop (``answer``): no thread.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.utils import z85

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
DOMAIN = b"salvus"


@dataclass(frozen=True)
class KeyPair:
    public: bytes  # Z85, 40 characters
    secret: bytes


def load_pair(path: Path) -> KeyPair:
    """A certificate with its secret key (``NAME.key_secret``)."""
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the CURVE key {path} ({exc})") from None
    if secret is None:
        raise ValueError(f"{path} holds no secret key")
    return KeyPair(public, secret)


def load_public(path: Path) -> bytes:
    public, _ = zmq.auth.load_certificate(path)
    return public


def load_allowed(folder: Path) -> set[bytes]:
    """Z85 public keys of every ``*.key`` certificate in ``folder``."""
    try:
        return set(zmq.auth.load_certificates(folder))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the allowed client keys in {folder} ({exc})") from None


def create_pair(folder: Path, name: str) -> tuple[Path, Path]:
    """Write ``NAME.key`` and ``NAME.key_secret`` (0600) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(folder, name)
    os.chmod(secret, 0o600)
    return Path(public), Path(secret)


def serve_as(socket: zmq.Socket, pair: KeyPair) -> None:
    """Make ``socket`` a CURVE server (before it binds)."""
    socket.zap_domain = DOMAIN
    socket.curve_secretkey = pair.secret
    socket.curve_publickey = pair.public
    socket.curve_server = True


def connect_as(socket: zmq.Socket, pair: KeyPair, server_public: bytes) -> None:
    """Make ``socket`` a CURVE client of ``server_public`` (before it connects)."""
    socket.curve_secretkey = pair.secret
    socket.curve_publickey = pair.public
    socket.curve_serverkey = server_public


def answer(zap: zmq.Socket, allowed: set[bytes]) -> bytes | None:
    """Answer one ZAP request; return the client's Z85 key if it was refused."""
    frames = zap.recv_multipart()
    if len(frames) < 6:
        return None  # not a ZAP request: nothing sensible to answer
    version, request_id, _domain, _address, _identity, mechanism = frames[:6]
    key = z85.encode(frames[6]) if mechanism == b"CURVE" and len(frames) == 7 \
        and len(frames[6]) == 32 else None
    ok = version == b"1.0" and key is not None and key in allowed
    zap.send_multipart([b"1.0", request_id, b"200" if ok else b"400",
                        b"OK" if ok else b"unknown key", key if ok else b"", b""])
    return None if ok else (key or b"?")
