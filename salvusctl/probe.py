"""Ask the programs themselves how they are, for status and check.

A worker answers a ping (over CURVE, with the frontends' key, which salvusctl
as their admin may use) with what it actually applies: its isolation and
limits. A program's last ``Error: ...`` log line says why it stopped.
"""

from __future__ import annotations

import contextlib
import os
import pwd
from pathlib import Path

import zmq

from sage_worker import curve, protocol

PING_TIMEOUT = 2.0


def ping_worker(endpoint: str, server_public: bytes, client: curve.KeyPair,
                timeout: float = PING_TIMEOUT) -> dict | None:
    """The worker's pong, or None if it does not answer in time."""
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.linger = 0
    sock.sndtimeo = int(timeout * 1000)
    try:
        curve.connect_as(sock, client, server_public)
        sock.connect(endpoint)
        sock.send_multipart(protocol.request("ping", "salvusctl"))
        if not sock.poll(int(timeout * 1000)):
            return None
        message, _ = protocol.parse_message(sock.recv_multipart())
        return message if message.get("type") == "pong" else None
    except (zmq.ZMQError, protocol.ProtocolError):
        return None
    finally:
        sock.close(linger=0)
        context.term()


def last_error(log: Path, nbytes: int = 16384) -> str | None:
    """The last ``Error: ...`` line of a program's log (where it said why it stopped)."""
    try:
        with open(log, "rb") as f:
            f.seek(max(f.seek(0, os.SEEK_END) - nbytes, 0))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    errors = [line[line.index("Error: "):] for line in lines if "Error: " in line]
    return errors[-1] if errors else None


def user_of(pid: int) -> str | None:
    """The user a process runs as."""
    with contextlib.suppress(OSError, StopIteration, KeyError, ValueError):
        with open(f"/proc/{pid}/status") as f:
            uid = int(next(line for line in f if line.startswith("Uid:")).split()[1])
        return pwd.getpwuid(uid).pw_name
    return None
