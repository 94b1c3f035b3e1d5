"""supervisord event listener that feeds the component registry.

Protocol (supervisor's eventlistener): write ``READY\\n``; read a header line
``key:value ...`` whose ``len`` gives the payload size; read the payload;
answer ``RESULT 2\\nOK``; repeat. The listener acknowledges every event at
once and writes to PostgreSQL separately, so a slow or absent database never
holds up supervisord or any program: events wait in a bounded in-memory
queue, are retried with backoff, and are spooled to a file when the listener
is stopped, to be sent on its next start.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import sys
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path

import psycopg2

from salvusctl import logline, registry


def log(message: str) -> None:
    """One line (salvusctl/logline.py); a sink that is gone costs the line."""
    logline.say(message)


def parse_tokens(text: str) -> dict[str, str]:
    return dict(token.split(":", 1) for token in text.split() if ":" in token)


class Protocol:
    """Byte-level reader/writer for supervisord's event listener protocol."""

    def __init__(self, fd_in: int, out):
        self.fd_in = fd_in
        self.out = out
        self.buffer = b""
        self.closed = False

    def ready(self) -> None:
        self.out.write(b"READY\n")
        self.out.flush()

    def ok(self) -> None:
        self.out.write(b"RESULT 2\nOK")
        self.out.flush()

    def poll(self, timeout: float) -> tuple[dict, str] | None:
        """One complete event (headers, payload) if it arrives within ``timeout``."""
        event = self._take()
        if event or self.closed:
            return event
        readable, _, _ = select.select([self.fd_in], [], [], timeout)
        if readable:
            chunk = os.read(self.fd_in, 65536)
            if not chunk:
                self.closed = True
            self.buffer += chunk
        return self._take()

    def _take(self) -> tuple[dict, str] | None:
        line, sep, rest = self.buffer.partition(b"\n")
        if not sep:
            return None
        headers = parse_tokens(line.decode())
        size = int(headers.get("len", 0))
        if len(rest) < size:
            return None
        self.buffer = rest[size:]
        return headers, rest[:size].decode()


class Listener:
    def __init__(self, args: argparse.Namespace):
        self.instance = args.instance
        self.host = args.host
        self.dsn_file = Path(args.dsn_file)
        self.spool = Path(args.spool)
        self.queue: deque[registry.Event] = deque(maxlen=args.buffer)
        self.dropped = 0
        self.conn = None
        self.next_try = 0.0
        self.backoff = 0.2
        self.stopping = False
        self.db_down_logged = False
        self.beat_due = True  # this host's heartbeat (registry.beat), on each tick

    def on_event(self, headers: dict, payload: str) -> None:
        name = headers.get("eventname", "")
        if name.startswith("TICK"):
            self.beat_due = True
            return
        if not name.startswith("PROCESS_STATE_"):
            return
        body = parse_tokens(payload.splitlines()[0] if payload else "")
        if len(self.queue) == self.queue.maxlen:
            self.dropped += 1
            log(f"buffer full: dropped the oldest event ({self.dropped} so far)")
        pid = body.get("pid")
        self.queue.append(registry.Event(
            instance=self.instance, host=self.host, name=body.get("processname", "?"),
            state=name.removeprefix("PROCESS_STATE_"), from_state=body.get("from_state"),
            pid=int(pid) if pid and pid.isdigit() else None, at=datetime.now(UTC),
        ))

    def flush(self, force: bool = False) -> None:
        if not (self.queue or self.beat_due) or (not force and time.monotonic() < self.next_try):
            return
        batch = list(self.queue)
        try:
            if self.conn is None or self.conn.closed:
                self.conn = psycopg2.connect(self.dsn_file.read_text().strip(),
                                             connect_timeout=2)
            if batch:
                registry.record(self.conn, batch)
                for _ in batch:  # written: never again, whatever the beat does
                    self.queue.popleft()
            if self.beat_due:
                registry.beat(self.conn, self.instance, self.host)
                self.beat_due = False
        except (psycopg2.Error, OSError) as exc:
            self._db_failed(exc)
            return
        if self.db_down_logged:
            log(f"database reachable again; wrote {len(batch)} held events")
        self.db_down_logged = False
        self.backoff = 0.2
        self.next_try = 0.0

    def _db_failed(self, exc: Exception) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = None
        if not self.db_down_logged:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            log(f"database not reachable ({first}); holding events and retrying")
            self.db_down_logged = True
        self.next_try = time.monotonic() + self.backoff
        self.backoff = min(self.backoff * 2, 5.0)

    def load_spool(self) -> None:
        if not self.spool.exists():
            return
        lines = self.spool.read_text().splitlines()
        for line in lines:
            try:
                self.queue.append(registry.Event.from_json(json.loads(line)))
            except (ValueError, TypeError, KeyError):
                log(f"skipped a damaged spool line: {line[:80]!r}")
        self.spool.unlink()
        log(f"loaded {len(lines)} spooled events")

    def save_spool(self) -> None:
        if not self.queue:
            return
        with self.spool.open("a") as f:
            for event in self.queue:
                f.write(json.dumps(event.to_json()) + "\n")
        log(f"spooled {len(self.queue)} events to {self.spool} for the next start")

    def run(self, protocol: Protocol) -> None:
        self.load_spool()
        protocol.ready()
        while not self.stopping and not protocol.closed:
            event = protocol.poll(timeout=0.5)
            if event:
                self.on_event(*event)
                protocol.ok()
                protocol.ready()
            self.flush()
        self.flush(force=True)
        self.save_spool()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="salvusctl.listener")
    parser.add_argument("--instance", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--dsn-file", required=True)
    parser.add_argument("--spool", required=True)
    parser.add_argument("--buffer", type=int, default=10000)
    args = parser.parse_args(argv)
    logline.setup("registry", logline.secrets_in(Path(args.dsn_file)))
    listener = Listener(args)

    def stop(_signum, _frame):
        listener.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log(f"started for instance {listener.instance} on {listener.host}")
    listener.run(Protocol(sys.stdin.fileno(), sys.stdout.buffer))
    log("stopped")


if __name__ == "__main__":
    main()
