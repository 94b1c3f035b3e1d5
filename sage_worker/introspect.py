"""Help on a name, as IPython and Sage's REPL give it: ``factor?`` shows the
signature and docstring, ``factor??`` the source, ``help(factor)`` the same
as ``factor?``.

A line that is only ``NAME?`` or ``NAME??`` (or ``?NAME``), NAME a dotted
name, becomes a call of the same length in lines before any other transform,
so tracebacks keep pointing at the user's lines. Sage's docstrings are reST:
with Sage loaded its own ``sage_getdoc`` turns them into the clean text its
REPL prints.
"""

from __future__ import annotations

import inspect
import keyword
import re
import sys
from typing import Any

HELP_CALL = "_salvus_help"
_NAME = r"[A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*"
HELP_LINE = re.compile(rf"^(?P<indent>[ \t]*)(?:(?P<name>{_NAME})(?P<marks>\?\??)"
                       rf"|(?P<pre>\?\??)(?P<prename>{_NAME}))[ \t]*$", re.MULTILINE)


def transform(code: str) -> str:
    return HELP_LINE.sub(_call, code)


def _call(match: re.Match) -> str:
    name = match.group("name") or match.group("prename")
    source = (match.group("marks") or match.group("pre")) == "??"
    return f"{match.group('indent')}{HELP_CALL}({name}, {name!r}, {source})"


def describe(value: Any, name: str, source: bool = False) -> str:
    """The help text on ``value``, known to the user as ``name``."""
    rows = []
    signature = _signature(value, name)
    if signature:
        rows.append(f"Signature: {signature}")
    rows.append(f"Type:      {type(value).__name__}")
    where = _file(value)
    if where:
        rows.append(f"File:      {where}")
    if source:
        text = _source(value)
        rows += ["Source:", text] if text else ["Source:   (not available)"]
    else:
        text = _doc(value)
        rows += ["Docstring:", text] if text else ["Docstring: (none)"]
    return "\n".join(rows).rstrip() + "\n"


def _sage() -> Any:
    return sys.modules.get("sage.misc.sageinspect")


def _signature(value: Any, name: str) -> str | None:
    sage = _sage()
    try:
        if not callable(value):
            return None
        if sage is not None:
            signature = sage.sage_getdef(value, name.rsplit(".", 1)[-1])
            return None if not signature or "[noargspec]" in signature else signature
        return f"{name.rsplit('.', 1)[-1]}{inspect.signature(value)}"
    except Exception:
        return None


def _doc(value: Any) -> str | None:
    return (_ask(value, "sage_getdoc", inspect.getdoc) or "").rstrip() or None


def _source(value: Any) -> str | None:
    return _ask(value, "sage_getsource", inspect.getsource)


def _file(value: Any) -> str | None:
    return _ask(value, "sage_getfile", inspect.getfile) or None


def _ask(value: Any, sage_function: str, plain_function) -> Any:
    """Sage's sageinspect where Sage is loaded (it knows Cython and reST),
    else inspect; None when neither can tell."""
    sage = _sage()
    try:
        return getattr(sage, sage_function)(value) if sage else plain_function(value)
    except Exception:
        return None


# ------------------------------------------------------------ completion

_TOKEN = re.compile(r"[A-Za-z_][\w.]*$")
MAX_MATCHES = 200


def complete(namespace: dict[str, Any], code: str, cursor: int) -> tuple[list[str], int, int]:
    """Names that complete the dotted name before ``cursor``: (matches, start,
    end), the matches replacing code[start:end]. Attributes come from the live
    object (``dir``), reached by name and getattr only: nothing else of the
    code is evaluated. Private names only when asked for (``x._``)."""
    token = _TOKEN.search(code[:cursor])
    if token is None:
        return [], cursor, cursor
    base, dot, prefix = token.group().rpartition(".")
    if dot:
        found = _lookup(namespace, base)
        names = dir(found) if found is not _MISSING else []
    else:
        builtins = namespace.get("__builtins__", {})
        names = [*namespace, *(builtins if isinstance(builtins, dict) else vars(builtins)),
                 *keyword.kwlist]
    matches = sorted({n for n in names if n.startswith(prefix)
                      and (prefix.startswith("_") or not n.startswith("_"))})
    return matches[:MAX_MATCHES], cursor - len(prefix), cursor


_MISSING = object()


def _lookup(namespace: dict[str, Any], dotted: str) -> Any:
    first, *rest = dotted.split(".")
    builtins = namespace.get("__builtins__", {})
    builtins = builtins if isinstance(builtins, dict) else vars(builtins)
    value = namespace.get(first, builtins.get(first, _MISSING))
    for name in rest:
        if value is _MISSING:
            break
        try:
            value = getattr(value, name)
        except Exception:
            return _MISSING
    return value
