"""The worker's wire format: the one place that builds, validates and parses it.

Frames on the ZeroMQ socket (the client is a DEALER, the worker a ROUTER)::

    client -> worker   [ b"salvus-worker/1" | JSON request ]
    worker -> client   [ b"salvus-worker/1" | JSON message | blob ]   blob: images only

    (the ROUTER sees the client's identity frame in front of these)

Every JSON frame is a UTF-8 object with a ``type``. Requests carry an ``id``
chosen by the client; direct replies echo it as ``re``. Output of an
execution carries ``session``, ``execution`` and ``seq`` (per session, from
1, no gaps, assigned by the worker parent, which is the only writer) and
always ends with exactly one ``done``. docs/protocol.md documents every type.
"""

from __future__ import annotations

import json
from typing import Any

TAG = b"salvus-worker/1"
MAX_REQUEST_BYTES = 1 << 20  # a request larger than this is refused unread
MAX_ID_LENGTH = 64

DONE_STATUSES = ("ok", "error", "interrupted", "timeout", "limit", "killed")
OUTPUT_TYPES = ("stream", "result", "image", "error", "notice", "done", "interact")

# request type -> {field: type} of required fields
REQUESTS: dict[str, dict[str, type]] = {
    "ping": {},
    "start": {},
    "execute": {"session": str, "execution": str, "code": str},
    "interrupt": {"session": str},
    "restart": {"session": str},
    "end": {"session": str},
    "interact": {"session": str, "execution": str, "interact": str, "values": dict},
}


class ProtocolError(Exception):
    """A request the worker cannot act on; answered with an ``error`` reply."""

    def __init__(self, code: str, message: str, re: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.re = re


def parse_request(frames: list[bytes]) -> dict[str, Any]:
    """Validate ``[TAG, JSON]`` (identity already removed) and return the request."""
    if len(frames) != 2 or frames[0] != TAG:
        raise ProtocolError("malformed", f"expected 2 frames [{TAG.decode()}, JSON]")
    body = frames[1]
    if len(body) > MAX_REQUEST_BYTES:
        raise ProtocolError("too_large", f"request is {len(body)} bytes; the limit is "
                            f"{MAX_REQUEST_BYTES}")
    try:
        request = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError("malformed", f"request is not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise ProtocolError("malformed", "request must be a JSON object")
    re = request.get("id")
    if not isinstance(re, str) or not 0 < len(re) <= MAX_ID_LENGTH:
        raise ProtocolError("bad_field", f"'id' must be a string of 1 to {MAX_ID_LENGTH} "
                            "characters")
    kind = request.get("type")
    if kind not in REQUESTS:
        raise ProtocolError("unknown_type", f"unknown request type {kind!r}; known: "
                            + ", ".join(REQUESTS), re)
    for field, expected in REQUESTS[kind].items():
        value = request.get(field)
        if not isinstance(value, expected):
            raise ProtocolError("bad_field", f"{kind}: '{field}' must be a "
                                f"{expected.__name__}", re)
        if field in ("session", "execution") and not 0 < len(value) <= MAX_ID_LENGTH:
            raise ProtocolError("bad_field", f"{kind}: '{field}' must have 1 to "
                                f"{MAX_ID_LENGTH} characters", re)
    return request


def _frames(message: dict[str, Any], blob: bytes | None = None) -> list[bytes]:
    frames = [TAG, json.dumps(message, separators=(",", ":")).encode()]
    if blob is not None:
        frames.append(blob)
    return frames


def reply(kind: str, re: str | None, **fields: Any) -> list[bytes]:
    """A direct answer to one request."""
    return _frames({"type": kind, "re": re, **fields})


def error(err: ProtocolError) -> list[bytes]:
    return reply("error", err.re, code=err.code, message=err.message)


def output(kind: str, session: str, execution: str, seq: int, blob: bytes | None = None,
           **fields: Any) -> list[bytes]:
    """One message of an execution's output stream."""
    assert kind in OUTPUT_TYPES, kind
    if kind == "done":
        assert fields.get("status") in DONE_STATUSES, fields
    return _frames({"type": kind, "session": session, "execution": execution, "seq": seq,
                    **fields}, blob)


def event(kind: str, session: str, seq: int, **fields: Any) -> list[bytes]:
    """A session-level message not tied to an execution (e.g. session_ended)."""
    return _frames({"type": kind, "session": session, "seq": seq, **fields})


def parse_message(frames: list[bytes]) -> tuple[dict[str, Any], bytes | None]:
    """Client side: decode a worker message (validated, since clients trust nothing)."""
    if len(frames) not in (2, 3) or frames[0] != TAG:
        raise ProtocolError("malformed", "unexpected frames from worker")
    message = json.loads(frames[1])
    if not isinstance(message, dict) or "type" not in message:
        raise ProtocolError("malformed", "worker message without a type")
    if message["type"] == "image" and len(frames) != 3:
        raise ProtocolError("malformed", "image message without its bytes")
    return message, frames[2] if len(frames) == 3 else None


def request(kind: str, request_id: str, **fields: Any) -> list[bytes]:
    """Client side: build a request."""
    return [TAG, json.dumps({"type": kind, "id": request_id, **fields}).encode()]
