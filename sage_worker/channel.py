"""The data path between the worker parent and one session child.

A ``socketpair`` per session (the child never touches the parent's ZeroMQ
context, which is not fork-safe). Each message is::

    | u32 json length | u32 blob length + 1 (0: no blob) | JSON | blob |

The JSON is an object whose ``type`` names it, as on the worker's and the
browser's wires: the parent sends ``execute``, ``interact`` and ``complete``
requests; the child answers with ``stream``, ``result``, ``image``,
``interact``, ``notice``, ``error``, ``completions`` and ``done``, which the
parent checks (``server.OUTPUT_FIELDS``, ``protocol.check_output``) before they go on.

The control path is separate: the parent signals the child's process group
(SIGINT to interrupt, SIGKILL to end), so a busy child never needs to read.
"""

from __future__ import annotations

import json
import signal
import socket
import struct
from typing import Any

HEADER = struct.Struct("!II")
# Larger than any honest message: an output chunk is 64 KiB, an image a few MB.
MAX_MESSAGE = 32 << 20
READ_LIMIT = 256 << 10  # bytes the parent reads from one session per turn of its loop


def encode(message: dict[str, Any], blob: bytes | None = None) -> bytes:
    # UTF-8, not \u escapes: encoded size stays close to the text's own size,
    # which the parent counts against the output cap.
    body = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8", "replace")  # a lone surrogate from user code is no reason to fail
    extra = 0 if blob is None else len(blob) + 1
    return HEADER.pack(len(body), extra) + body + (blob or b"")


class Decoder:
    """Incremental decoder: feed bytes, take whole messages."""

    def __init__(self):
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[Any, bytes | None, int]]:
        """Whole messages so far: (decoded JSON, blob, its size on the wire)."""
        self.buffer += data
        messages = []
        while len(self.buffer) >= HEADER.size:
            body_len, extra = HEADER.unpack_from(self.buffer)
            blob_len = max(extra - 1, 0)
            total = HEADER.size + body_len + blob_len
            if body_len + blob_len > MAX_MESSAGE:
                raise ValueError(f"channel message of {body_len + blob_len} bytes")
            if len(self.buffer) < total:
                break
            body = bytes(self.buffer[HEADER.size:HEADER.size + body_len])
            blob = bytes(self.buffer[HEADER.size + body_len:total]) if extra else None
            del self.buffer[:total]
            messages.append((json.loads(body), blob, total))
        return messages


def pair() -> tuple[socket.socket, socket.socket]:
    """(parent end, child end); the parent end is non-blocking."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    parent.setblocking(False)
    return parent, child


class ChildEnd:
    """The child's blocking end: send messages, receive requests."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.decoder = Decoder()
        self.pending: list[tuple[Any, bytes | None, int]] = []

    def send(self, message: dict[str, Any], blob: bytes | None = None) -> None:
        data = encode(message, blob)
        # An interrupt inside sendall would leave half a message on the wire,
        # which the parent rightly reads as garbage and ends the session for:
        # SIGINT waits until the message is whole, then raises as usual.
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            self.sock.sendall(data)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)

    def receive(self) -> dict[str, Any] | None:
        """The next request, or None when the parent has gone."""
        while not self.pending:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.pending += self.decoder.feed(data)
        return self.pending.pop(0)[0]

    def fileno(self) -> int:
        return self.sock.fileno()


def read_available(sock: socket.socket, decoder: Decoder,
                   limit: int = READ_LIMIT) -> tuple[list, bool]:
    """Parent side: read what is there without blocking, at most about
    ``limit`` bytes (a session that floods its channel gets its turn, not the
    whole loop); (messages, closed)."""
    messages, closed, read = [], False, 0
    while read < limit:
        try:
            data = sock.recv(min(1 << 20, limit - read))
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            closed = True
            break
        if not data:
            closed = True
            break
        read += len(data)
        messages += decoder.feed(data)
    return messages, closed


