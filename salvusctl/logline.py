"""One line per event, the same from every program (web, worker, registry).

    2026-11-30T01:45:10.123456Z web0 host1 4242 INFO session=9f3c… | the message

- the record time: UTC, microseconds, taken when the line is made (a log
  table keeps it, not the time of its insertion);
- the program (``web0``, ``worker1``, ``registry``), the host, the pid and the
  level;
- context as ``key=value`` pairs without spaces (``session``, ``browser``),
  when a line has them;
- after `` | ``, the message on one line (a newline is written ``\\n``), with
  every known secret masked.

Programs log through Python's ``logging`` to stderr (supervisord writes the
files); ``setup`` installs the one formatter. Logging never stops a
program: a line that cannot be written is lost, not raised
(``logging.raiseExceptions`` is off). ``parse`` reads a line back; lines of
other formats (PostgreSQL's own, a traceback) give None.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path

LOGGER = "salvus"
CONTEXT = ("session", "browser")  # record attributes written as key=value
# Secrets by their shape, whatever their value: a DSN's password.
SHAPES = (re.compile(r"(password\s*=\s*)('[^']*'|\S+)", re.I),
          re.compile(r"(\w+://[^:/@\s]+:)([^@\s]+)(?=@)"))
MASK = "***"
LINE = re.compile(r"^(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) (?P<program>\S+) "
                  r"(?P<host>\S+) (?P<pid>\d+) (?P<level>[A-Z]+)(?P<context>(?: \w+=\S+)*)"
                  r" \| (?P<message>.*)$")


class LineFormatter(logging.Formatter):
    def __init__(self, program: str, secrets: frozenset[str] = frozenset()):
        super().__init__()
        self.head = f"{program} {socket.gethostname()} {os.getpid()}"
        self.secrets = sorted((s for s in secrets if len(s) >= 8), key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        context = "".join(f" {key}={_token(getattr(record, key))}" for key in CONTEXT
                          if getattr(record, key, None))
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        return f"{stamp} {self.head} {record.levelname}{context} | {self.mask(message)}"

    def mask(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        for shape in SHAPES:
            text = shape.sub(lambda m: m.group(1) + MASK, text)
        return text.replace("\r", "\\r").replace("\n", "\\n")


def _token(value) -> str:
    return re.sub(r"[\s|]", "_", str(value))[:80]


def setup(program: str, secrets: frozenset[str] = frozenset(), stream=None) -> logging.Logger:
    """This process's lines go to ``stream`` (stderr) in the one format; the
    handler of an earlier setup is replaced (a program sets up once, tests
    may more often)."""
    logging.raiseExceptions = False  # a sink that is gone costs the line, never the program
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(LineFormatter(program, secrets))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h.formatter, LineFormatter)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return logging.getLogger(LOGGER)


def forget() -> None:
    """In a forked session child: the worker's lines are not the session's
    (a library's warning in user code goes to the cell's stderr, as plainly
    as in Python)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h.formatter, LineFormatter)]:
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)
    logging.raiseExceptions = True  # Python's default, for the user's own logging


def say(message: str, level: int = logging.INFO, **context) -> None:
    """A line of this process's program (set up by ``setup``)."""
    logger = logging.getLogger(LOGGER)
    if not logging.getLogger().handlers:  # before setup (an early error): still a line
        setup(Path(sys.argv[0]).name or "python")
    logger.log(level, message, extra={k: v for k, v in context.items() if k in CONTEXT})


def secrets_in(*files: Path) -> frozenset[str]:
    """The values a program holds that must never show in a line: the
    passwords in DSN files, secret keys, OAuth client secrets."""
    found = set()
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        found |= {m.group(2).strip("'") for shape in SHAPES for m in shape.finditer(text)}
        found |= set(re.findall(r'secret-key\s*=\s*"([^"]+)"', text))
        found |= set(re.findall(r'"client_secret":\s*"([^"]+)"', text))  # providers.json
        if re.fullmatch(r"\s*[A-Za-z0-9_\-]{16,}\s*", text):  # a file that is one secret
            found.add(text.strip())
    return frozenset(found)


def parse(line: str) -> dict | None:
    """A line of ours, as fields (``context`` a dict); None otherwise."""
    match = LINE.match(line.rstrip("\n"))
    if match is None:
        return None
    fields = match.groupdict()
    fields["pid"] = int(fields["pid"])
    fields["context"] = dict(pair.split("=", 1) for pair in fields["context"].split())
    fields["message"] = fields["message"].replace("\\n", "\n")
    return fields
