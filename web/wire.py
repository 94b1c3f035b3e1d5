"""The browser protocol: JSON text frames over the websocket (docs/protocol.md).

This module alone parses and validates what a browser sends (``parse``) and
builds every message the frontend makes for a browser (the functions below
``encode``); the worker's output passes through with the session's ``seq``.
``WireError`` becomes a ``protocol_error`` to that browser while its
connection stays up.
"""

from __future__ import annotations

import json
from typing import Any

MAX_FRAME = 1 << 20  # bytes of one browser message
MAX_CODE = 256 << 10  # characters of one cell
MAX_ID = 64

# type -> {field: (type, required)}
REQUESTS: dict[str, dict[str, tuple[type, bool]]] = {
    "open": {"session": (str, False), "last_seq": (int, False)},
    # typeset: the worksheet's Typeset switch; language: "python" runs cells
    # without Sage's preparser (a Sage worksheet's default engine)
    "execute": {"cell": (str, True), "code": (str, True), "typeset": (bool, False),
                "language": (str, False), "webgl": (bool, False)},
    "interrupt": {},
    "restart": {},
    "ping": {},
    "interact": {"cell": (str, True), "interact": (str, True), "values": (dict, True)},
    "leave": {},
    # over the per-browser limit: end one of this browser's sessions (by id)
    "close": {"session": (str, True)},
    "complete": {"cell": (str, True), "code": (str, True)},  # code: the cell up to the cursor
    # the worksheet's cells in order, [{cell, code}], run or not: kept with the
    # session, so that a reload (on any frontend) shows the worksheet as it was
    "layout": {"cells": (list, True)},
}
MAX_CELLS = 1000  # cells in one layout
MAX_VALUES = 100  # controls of one interact
LANGUAGES = ("sage", "python")


class WireError(Exception):
    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}  # more for the page (a quota's sessions)


def parse(frame: str | bytes) -> dict[str, Any]:
    if isinstance(frame, bytes):
        raise WireError("malformed", "send JSON text frames, not binary ones")
    if len(frame) > MAX_FRAME:
        raise WireError("too_large", f"message of {len(frame)} characters; the limit is "
                        f"{MAX_FRAME}")
    try:
        message = json.loads(frame)
    except RecursionError:
        raise WireError("malformed", "nested too deeply") from None
    except ValueError as exc:
        raise WireError("malformed", f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise WireError("malformed", "a message must be a JSON object")
    kind = message.get("type")
    if not isinstance(kind, str) or kind not in REQUESTS:
        raise WireError("unknown_type", f"unknown message type {str(kind)[:40]!r}; known: "
                        + ", ".join(REQUESTS))
    for field, (expected, required) in REQUESTS[kind].items():
        if field not in message:
            if required:
                raise WireError("bad_field", f"{kind}: '{field}' is missing")
            continue
        value = message[field]
        if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
            raise WireError("bad_field", f"{kind}: '{field}' must be a {expected.__name__}")
        if field in ("session", "cell", "interact") and not 0 < len(value) <= MAX_ID:
            raise WireError("bad_field", f"{kind}: '{field}' must have 1 to {MAX_ID} "
                            "characters")
        if field == "last_seq" and value < 0:
            raise WireError("bad_field", "open: 'last_seq' must not be negative")
    if kind == "interact" and not _flat_values(message["values"]):
        raise WireError("bad_field", f"interact: 'values' must map at most {MAX_VALUES} "
                        "control names to numbers, text or true/false")
    if kind == "execute" and message.get("language", "sage") not in LANGUAGES:
        raise WireError("bad_field", f"execute: 'language' must be one of {', '.join(LANGUAGES)}")
    if kind == "layout" and not _layout(message["cells"]):
        raise WireError("bad_field", f"layout: 'cells' must be at most {MAX_CELLS} objects "
                        f"{{cell, code}} with distinct ids (1 to {MAX_ID} characters) and "
                        f"code of at most {MAX_CODE} characters")
    if kind in ("execute", "complete") and len(message["code"]) > MAX_CODE:
        raise WireError("too_large", f"cell of {len(message['code'])} characters; the "
                        f"limit is {MAX_CODE}")
    return message


def _layout(cells: list) -> bool:
    ok = len(cells) <= MAX_CELLS and all(
        isinstance(c, dict) and set(c) == {"cell", "code"} and isinstance(c["cell"], str)
        and 0 < len(c["cell"]) <= MAX_ID and isinstance(c["code"], str)
        and len(c["code"]) <= MAX_CODE for c in cells)
    return ok and len({c["cell"] for c in cells}) == len(cells)


def _flat_values(values: dict) -> bool:
    return len(values) <= MAX_VALUES and all(
        isinstance(k, str) and len(k) <= MAX_ID and isinstance(v, str | int | float | bool)
        and len(str(v)) <= MAX_CODE for k, v in values.items())


def encode(message: dict[str, Any]) -> str:
    # Characters as themselves, not \u escapes: non-Latin output travels at
    # its own size. A lone surrogate (user code can make one) cannot be sent
    # as UTF-8, so only then are escapes used.
    text = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            return json.dumps(message, separators=(",", ":"))
    return text


def error(err: WireError) -> str:
    """A refused browser message ("error" is an execution's traceback)."""
    return encode({"type": "protocol_error", "code": err.code, "message": err.message,
                   **err.details})


# ------------------------------------------------------------------ frontend -> browser
# ``seq``: the worker's number when the message is one of the session's (it
# is logged and replayed); None for what a frontend says to its own pages.


def _numbered(message: dict[str, Any], seq: int | None) -> dict[str, Any]:
    if seq is not None:
        message["seq"] = seq
    return message


def attached(session: str, seq: int, cells: list[dict], complete: bool,
             frontends: list[str], layout: list[dict] | None = None) -> dict[str, Any]:
    """``cells``: each cell's latest run; ``layout``: the worksheet as its page
    last arranged it (None: never said; the cells then go in order of runs)."""
    return {"type": "attached", "session": session, "seq": seq, "cells": cells,
            "complete": complete, "frontends": frontends, "layout": layout}


def gap(missed: int) -> dict[str, Any]:
    return {"type": "gap", "missed": missed,
            "text": f"{missed} messages were dropped because this connection could not "
                    "keep up"}


def session_status(state: str, reason: str, seq: int | None = None) -> dict[str, Any]:
    return _numbered({"type": "session_status", "state": state, "reason": reason}, seq)


def queued(cell: str, execution: str, seq: int | None = None) -> dict[str, Any]:
    return _numbered({"type": "queued", "cell": cell, "execution": execution}, seq)


def running(cell: str, execution: str, seq: int) -> dict[str, Any]:
    return {"type": "running", "cell": cell, "execution": execution, "seq": seq}


def interact_run(cell: str, interact: str, execution: str, seq: int,
                 values: dict | None = None) -> dict[str, Any]:
    """An interact runs again; ``values``: the controls' values it runs with."""
    message = {"type": "interact_run", "cell": cell, "interact": interact,
               "execution": execution, "seq": seq}
    if values is not None:
        message["values"] = values
    return message


def notice(cell: str, execution: str, text: str, interact: str | None = None,
           seq: int | None = None) -> dict[str, Any]:
    message = {"type": "notice", "cell": cell, "execution": execution, "text": text}
    if interact:
        message["interact"] = interact
    return _numbered(message, seq)


def done(cell: str, execution: str, status: str, interact: str | None = None) -> dict[str, Any]:
    message = {"type": "done", "cell": cell, "execution": execution, "status": status}
    if interact:
        message["interact"] = interact
    return message


def completions(cell: str, prefix: str = "", matches: list[str] | None = None
                ) -> dict[str, Any]:
    return {"type": "completions", "cell": cell, "prefix": prefix, "matches": matches or []}


def announcement(message_id: str, text: str, sender: str) -> dict[str, Any]:
    return {"type": "announcement", "id": message_id, "text": text, "from": sender}


def pong() -> dict[str, Any]:
    return {"type": "pong"}
