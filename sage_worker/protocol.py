"""The worker's wire format: the one place that builds, validates and parses it.

Frames on the ZeroMQ socket (the client is a DEALER, the worker a ROUTER)::

    client -> worker   [ b"salvus-worker/1" | JSON request ]
    worker -> client   [ b"salvus-worker/1" | JSON message | blob ]   blob: images only

    (the ROUTER sees the client's identity frame in front of these)

Every session message is also published on the worker's PUB socket, with
the session's id as the topic, and kept in the session's log (``replay``
sends what a client missed)::

    worker -> subscribers   [ session id | b"salvus-worker/1" | JSON message | blob ]

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
OUTPUT_TYPES = ("stream", "result", "image", "error", "notice", "done", "interact",
                "completions", "queued", "running")
# What an output may be shown as; anything else is refused where it enters.
IMAGE_MIMES = ("image/png", "image/svg+xml")
# A 3D scene: JSON that the page's own three.js viewer draws in a sandboxed frame.
SCENE_MIME = "application/vnd.salvus.scene3d+json"
RESULT_MIMES = ("text/plain", "text/latex", "text/html", SCENE_MIME)
MAX_CONTROLS = 100
MAX_COMPLETIONS = 200  # names offered for one completion, at most
MAX_CODE_FOR_COMPLETION = 64 << 10  # completion looks at the code before the cursor
SHA1_HEX = 40

# request type -> {field: type} of required fields
REQUESTS: dict[str, dict[str, type]] = {
    "ping": {},
    "start": {},
    "execute": {"session": str, "execution": str, "code": str},
    "interrupt": {"session": str},
    "restart": {"session": str},
    "end": {"session": str},
    "interact": {"session": str, "execution": str, "interact": str, "values": dict},
    "claim": {"sessions": list},
    "complete": {"session": str, "execution": str, "code": str, "cursor": int},
    # the session's logged messages after seq ``after``, then ``replayed``
    "replay": {"session": str, "after": int},
    # its page is gone for good: end it soon unless a frontend watches it again
    "release": {"session": str},
    # the worksheet as its page arranges it: [{cell, code}] in order, run or not
    # (kept with the session; ``replayed`` gives it to a page that comes back)
    "layout": {"session": str, "cells": list},
}
MAX_CELLS = 1000  # cells of one worksheet's layout


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
    except RecursionError:
        raise ProtocolError("malformed", "request is nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError("malformed", f"request is not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise ProtocolError("malformed", "request must be a JSON object")
    re = request.get("id")
    if not isinstance(re, str) or not 0 < len(re) <= MAX_ID_LENGTH:
        raise ProtocolError("bad_field", f"'id' must be a string of 1 to {MAX_ID_LENGTH} "
                            "characters")
    kind = request.get("type")
    if not isinstance(kind, str) or kind not in REQUESTS:
        raise ProtocolError("unknown_type", f"unknown request type {str(kind)[:40]!r}; known: "
                            + ", ".join(REQUESTS), re)
    for field, expected in REQUESTS[kind].items():
        value = request.get(field)
        if not isinstance(value, expected):
            raise ProtocolError("bad_field", f"{kind}: '{field}' must be a "
                                f"{expected.__name__}", re)
        if field in ("session", "execution") and not 0 < len(value) <= MAX_ID_LENGTH:
            raise ProtocolError("bad_field", f"{kind}: '{field}' must have 1 to "
                                f"{MAX_ID_LENGTH} characters", re)
    if kind == "claim" and not all(_is_id(s) for s in request["sessions"]):
        raise ProtocolError("bad_field", "claim: 'sessions' must be a list of session ids", re)
    if kind == "execute":
        _check_execute_options(request, re)
    if kind in ("execute", "interact") and not _is_id(request.get("cell", "c")):
        raise ProtocolError("bad_field", f"{kind}: 'cell' must have 1 to {MAX_ID_LENGTH} "
                            "characters", re)
    if kind in ("execute", "interact") and not isinstance(request.get("direct", True), bool):
        raise ProtocolError("bad_field", f"{kind}: 'direct' must be true or false", re)
    if kind == "start":
        _check_start(request, re)
    if kind == "layout" and not is_layout(request["cells"]):
        raise ProtocolError("bad_field", f"layout: 'cells' must be at most {MAX_CELLS} "
                            "objects {cell, code} with distinct cell ids", re)
    if kind == "replay" and request["after"] < 0:
        raise ProtocolError("bad_field", "replay: 'after' must not be negative", re)
    if kind == "complete" and not (0 <= request["cursor"] <= len(request["code"])
                                   <= MAX_CODE_FOR_COMPLETION):
        raise ProtocolError("bad_field", "complete: 'cursor' must be within 'code' (at most "
                            f"{MAX_CODE_FOR_COMPLETION} characters)", re)
    return request


LANGUAGES = ("sage", "python")  # how a Sage session reads a cell: preparsed, or plain
SESSION_ID = frozenset("0123456789abcdef")  # ids are 32 of these (uuid4().hex)


def is_layout(cells: Any) -> bool:
    """[{cell, code}, ...]: at most MAX_CELLS, ids distinct (the size of the
    whole is bounded by MAX_REQUEST_BYTES)."""
    if not isinstance(cells, list) or len(cells) > MAX_CELLS:
        return False
    ok = all(isinstance(c, dict) and set(c) == {"cell", "code"} and _is_id(c["cell"])
             and isinstance(c["code"], str) for c in cells)
    return ok and len({c["cell"] for c in cells}) == len(cells)


def is_session_id(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 32 and set(value) <= SESSION_ID


def _check_start(request: dict[str, Any], re: str) -> None:
    """start's optional fields: ``session`` (the id to use: a session that
    moves to this worker keeps its id), ``seq`` (where its numbering goes on)
    and ``owner`` (who may open it: the browser, later the account)."""
    if "session" in request and not is_session_id(request["session"]):
        raise ProtocolError("bad_field", "start: 'session' must be 32 hex digits", re)
    seq = request.get("seq", 0)
    if type(seq) is not int or seq < 0:
        raise ProtocolError("bad_field", "start: 'seq' must be a number from 0", re)
    if "owner" in request and not _is_id(request["owner"]):
        raise ProtocolError("bad_field", f"start: 'owner' must have 1 to {MAX_ID_LENGTH} "
                            "characters", re)


def _check_execute_options(request: dict[str, Any], re: str) -> None:
    """execute's optional fields: ``typeset`` (typeset the result, as show()
    does), ``language`` (``python``: no Sage preparser, as %python) and
    ``webgl`` (false: the browser cannot draw 3D scenes; send pictures)."""
    if not isinstance(request.get("typeset", False), bool):
        raise ProtocolError("bad_field", "execute: 'typeset' must be true or false", re)
    if not isinstance(request.get("webgl", True), bool):
        raise ProtocolError("bad_field", "execute: 'webgl' must be true or false", re)
    if request.get("language", "sage") not in LANGUAGES:
        raise ProtocolError("bad_field", "execute: 'language' must be one of "
                            + ", ".join(LANGUAGES), re)


def _bad(kind: str, what: str) -> ProtocolError:
    return ProtocolError("bad_output", f"{kind}: {what}")


def _is_text_map(value: Any, keys: tuple[str, ...]) -> bool:
    return isinstance(value, dict) and all(
        k in keys and isinstance(v, str) for k, v in value.items())


def _is_texts(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _is_control(value: Any) -> bool:
    """A control as the page draws it: every field it reads, of its type."""
    if not (isinstance(value, dict) and isinstance(value.get("type"), str)
            and all(isinstance(value.get(k), str) for k in ("name", "label"))):
        return False
    kind, current = value["type"], value.get("value")
    if kind == "slider":
        bounds = [value.get(k) for k in ("min", "max", "step")]
        return (all(type(b) is int for b in bounds) and type(current) is int
                and _is_texts(value.get("labels"))
                and len(value["labels"]) == bounds[1] - bounds[0] + 1)
    if kind == "selector":
        return type(current) is int and _is_texts(value.get("choices"))
    if kind == "checkbox":
        return isinstance(current, bool)
    return kind in ("input_box", "color") and isinstance(current, str)


def check_output(kind: str, fields: dict[str, Any], blob: bytes | None) -> None:
    """Validate one output message's fields (its own, without session, execution
    and seq). Session processes run hostile code, so the worker checks what a
    session sends before forwarding it, and clients check it again."""
    if fields.get("cell") is not None and not _is_id(fields["cell"]):
        raise _bad(kind, "'cell' must be an id of 1 to 64 characters")
    interact = fields.get("interact")
    if interact is not None and not (isinstance(interact, str)
                                     and 0 < len(interact) <= MAX_ID_LENGTH):
        raise _bad(kind, "'interact' must be an id of 1 to 64 characters")
    if (blob is not None) != (kind == "image"):
        raise _bad(kind, "only images carry bytes, and every image does")
    if kind == "stream":
        if fields.get("name") not in ("stdout", "stderr") or not isinstance(
                fields.get("text"), str):
            raise _bad(kind, "needs name stdout/stderr and text")
    elif kind == "result":
        data = fields.get("data")
        if not _is_text_map(data, RESULT_MIMES) or "text/plain" not in data:
            raise _bad(kind, f"data must map {', '.join(RESULT_MIMES)} to text, "
                       "text/plain included")
    elif kind == "image":
        width = fields.get("width")
        sha1 = fields.get("sha1")
        if fields.get("mime") not in IMAGE_MIMES or fields.get("size") != len(blob) \
                or not (isinstance(sha1, str) and len(sha1) == SHA1_HEX) \
                or not (width is None or (type(width) is int and 0 < width < 100000)):
            raise _bad(kind, f"needs mime ({', '.join(IMAGE_MIMES)}), size, sha1, width")
    elif kind == "error":
        if not all(isinstance(fields.get(k), str) for k in ("ename", "evalue", "traceback")):
            raise _bad(kind, "needs ename, evalue and traceback as text")
    elif kind == "notice":
        if not isinstance(fields.get("text"), str):
            raise _bad(kind, "needs text")
    elif kind == "done":
        if fields.get("status") not in DONE_STATUSES:
            raise _bad(kind, "status must be one of " + ", ".join(DONE_STATUSES))
    elif kind == "interact":
        controls = fields.get("controls")
        if not (isinstance(interact, str) and isinstance(controls, list)
                and len(controls) <= MAX_CONTROLS and all(map(_is_control, controls))):
            raise _bad(kind, "needs its id and a list of controls")
    elif kind == "completions":
        matches, start, end = (fields.get(k) for k in ("matches", "start", "end"))
        if not (_is_texts(matches) and len(matches) <= MAX_COMPLETIONS
                and all(0 < len(m) <= 200 for m in matches)
                and type(start) is int and type(end) is int and 0 <= start <= end):
            raise _bad(kind, f"needs matches (at most {MAX_COMPLETIONS} names), start, end")
    elif kind == "queued":  # the worker's own: an execution waits (a cell's has its code)
        if not (fields.get("code") is None or isinstance(fields["code"], str)):
            raise _bad(kind, "code must be text")
        if not (fields.get("values") is None or isinstance(fields["values"], dict)):
            raise _bad(kind, "values must be an object")
    elif kind == "running":  # the worker's own: an execution started
        pass
    else:
        raise _bad(str(kind)[:40], "unknown output type")


def _json(message: dict[str, Any]) -> bytes:
    # UTF-8 rather than \u escapes: an emoji costs 4 bytes, not 12, so what
    # the cap counts is what travels. A lone surrogate (user code can make one)
    # has no UTF-8 form; only then are escapes used.
    text = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode()
    except UnicodeEncodeError:
        return json.dumps(message, separators=(",", ":")).encode()


def _frames(message: dict[str, Any], blob: bytes | None = None) -> list[bytes]:
    frames = [TAG, _json(message)]
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
    return _frames({"type": kind, "session": session, "execution": execution, "seq": seq,
                    **fields}, blob)


def event(kind: str, session: str, seq: int, **fields: Any) -> list[bytes]:
    """A session-level message not tied to an execution (e.g. session_ended)."""
    return _frames({"type": kind, "session": session, "seq": seq, **fields})


def published(session: str, frames: list[bytes]) -> list[bytes]:
    """A session message as the PUB socket sends it: its session is the topic."""
    return [session.encode(), *frames]


def parse_published(frames: list[bytes]) -> tuple[dict[str, Any], bytes | None]:
    """Subscriber side: a published message, validated like any other; its
    topic must be the session it names."""
    if len(frames) < 3:
        raise ProtocolError("malformed", "a published message has a topic and a message")
    message, blob = parse_message(frames[1:])
    if message.get("session", "").encode() != frames[0]:
        raise ProtocolError("malformed", "published under another session's topic")
    return message, blob


def parse_message(frames: list[bytes]) -> tuple[dict[str, Any], bytes | None]:
    """Client side: decode and validate a worker message. Clients trust nothing:
    whatever passes here has the types docs/protocol.md promises."""
    if len(frames) not in (2, 3) or frames[0] != TAG:
        raise ProtocolError("malformed", "unexpected frames from worker")
    try:
        message = json.loads(frames[1])
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ProtocolError("malformed", "worker message is not JSON") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError("malformed", "worker message without a type")
    blob = frames[2] if len(frames) == 3 else None
    kind = message["type"]
    # "error" is also the reply to a refused request (with "code", no execution).
    if kind in OUTPUT_TYPES and not (kind == "error" and "code" in message):
        if not (_is_id(message.get("session")) and _is_id(message.get("execution"))
                and type(message.get("seq")) is int):
            raise ProtocolError("malformed", f"{kind} without session, execution and seq")
        fields = {k: v for k, v in message.items()
                  if k not in ("type", "session", "execution", "seq")}
        check_output(kind, fields, blob)
    elif blob is not None:
        raise ProtocolError("malformed", f"{kind} message with bytes")
    elif "session" in message and not _is_id(message["session"]):
        raise ProtocolError("malformed", f"{kind}: bad session id")
    elif "re" in message and message["re"] is not None and not _is_id(message["re"]):
        raise ProtocolError("malformed", f"{kind}: bad request id")
    elif kind == "error" and not (isinstance(message.get("code"), str)
                                  and isinstance(message.get("message"), str)):
        raise ProtocolError("malformed", "error reply without code and message")
    return message, blob


def _is_id(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH


def request(kind: str, request_id: str, **fields: Any) -> list[bytes]:
    """Client side: build a request."""
    return [TAG, _json({"type": kind, "id": request_id, **fields})]
