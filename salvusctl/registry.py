"""The component registry in PostgreSQL: record events, compare, repair.

``components`` holds one row per program of each appliance instance (its
current state); ``component_events`` keeps every change. The listener writes
both; ``salvusctl check`` repairs ``components`` from what supervisord says
and logs each repair as an event with source 'check'.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from salvusctl.programs import kind_of

# supervisord reports a pid only while the process exists.
LIVE_STATES = {"STARTING", "RUNNING", "BACKOFF", "STOPPING"}
# States a process reports once it has ended (with the pid it had).
ENDED_STATES = {"EXITED", "STOPPED"}


@dataclass(frozen=True)
class Event:
    instance: str
    host: str
    name: str
    state: str
    from_state: str | None
    pid: int | None
    at: datetime

    @property
    def kind(self) -> str:
        return kind_of(self.name)

    @property
    def current_pid(self) -> int | None:
        """The pid to show as current: none once the process has ended."""
        return self.pid if self.state in LIVE_STATES and self.pid else None

    def to_json(self) -> dict:
        return {**self.__dict__, "at": self.at.isoformat()}

    @classmethod
    def from_json(cls, raw: dict) -> Event:
        return cls(**{**raw, "at": datetime.fromisoformat(raw["at"])})


def record(conn, events: list[Event], source: str = "listener") -> None:
    """Store events in one transaction: all of them or none."""
    with conn, conn.cursor() as cur:
        for e in events:
            cur.execute(
                "INSERT INTO component_events"
                " (instance, name, kind, host, pid, state, from_state, source, at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (e.instance, e.name, e.kind, e.host, e.pid, e.state, e.from_state, source, e.at),
            )
            if e.kind == "web" and e.state in ENDED_STATES and e.pid:
                # Its websockets ended with it (a frontend killed cannot say so).
                cur.execute("DELETE FROM browsers WHERE instance = %s AND host = %s"
                            " AND frontend = %s AND pid = %s",
                            (e.instance, e.host, e.name, e.pid))
            # Only a newer observation replaces the current row.
            cur.execute(
                "INSERT INTO components (instance, name, kind, host, pid, state, updated_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (instance, host, name) DO UPDATE SET kind = EXCLUDED.kind,"
                " pid = EXCLUDED.pid, state = EXCLUDED.state,"
                " updated_at = EXCLUDED.updated_at"
                " WHERE components.updated_at <= EXCLUDED.updated_at",
                (e.instance, e.name, e.kind, e.host, e.current_pid, e.state, e.at),
            )


def beat(conn, instance: str, host: str) -> None:
    """This host's registry is alive (see sql/006_hosts.sql)."""
    with conn, conn.cursor() as cur:
        cur.execute("INSERT INTO hosts (instance, host, seen_at) VALUES (%s, %s, now())"
                    " ON CONFLICT (instance, host) DO UPDATE SET seen_at = now()",
                    (instance, host))


def every_host(conn, instance: str) -> list[dict]:
    """Every program of the instance on every host, with how long ago its
    host's registry last beat (None: never)."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT c.host, c.name, c.kind, c.state, c.pid,"
            " extract(epoch FROM now() - c.updated_at),"
            " extract(epoch FROM now() - h.seen_at)"
            " FROM components c LEFT JOIN hosts h"
            " ON h.instance = c.instance AND h.host = c.host"
            " WHERE c.instance = %s ORDER BY c.host, c.kind, c.name", (instance,))
        return [{"host": host, "name": name, "kind": kind, "state": state, "pid": pid,
                 "since": int(since), "heard": None if heard is None else int(heard)}
                for host, name, kind, state, pid, since, heard in cur.fetchall()]


def observed(info: dict) -> tuple[str, int | None]:
    """(state, pid) of one supervisord getProcessInfo answer."""
    state = info["statename"]
    pid = info["pid"] if state in LIVE_STATES and info["pid"] else None
    return state, pid


def check(conn, instance: str, host: str, actual: dict[str, dict],
          hosts: tuple[str, ...] | None = None) -> list[str]:
    """Make this host's rows of ``components`` agree with its supervisord, and
    remove the rows of hosts the config no longer has (``hosts``; by default
    only this one); return one line per repair."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT name, host, pid, state FROM components WHERE instance = %s", (instance,)
        )
        found = cur.fetchall()
    rows = {name: (pid, state) for name, h, pid, state in found if h == host}
    gone = sorted({(h, name) for name, h, _, _ in found if h not in (hosts or (host,))})
    now = datetime.now(UTC)
    repairs, events = [], []
    for name in sorted(actual):
        state, pid = observed(actual[name])
        if name not in rows:
            repairs.append(f"{name}: added missing row ({state}, pid {pid})")
        elif rows[name] != (pid, state):
            old_pid, old_state = rows[name]
            changes = []
            if old_state != state:
                changes.append(f"state {old_state} -> {state}")
            if old_pid != pid:
                changes.append(f"pid {old_pid} -> {pid}")
            repairs.append(f"{name}: fixed " + ", ".join(changes))
        else:
            continue
        events.append(Event(instance, host, name, state, None, pid, now))
    if events:
        record(conn, events, source="check")
    stale = [(host, name) for name in sorted(set(rows) - set(actual))]
    with conn, conn.cursor() as cur:
        for h, name in [*stale, *gone]:
            cur.execute("DELETE FROM components WHERE instance = %s AND host = %s"
                        " AND name = %s", (instance, h, name))
    repairs += [f"{name}: removed row of a program that no longer exists" for _, name in stale]
    repairs += [f"{name}: removed row of host {h}, which the config no longer has"
                for h, name in gone]
    return repairs


def check_browsers(conn, instance: str, host: str, actual: dict[str, dict]) -> list[str]:
    """Remove ``browsers`` rows of frontend processes of this host that no
    longer run (killed, stopped, or gone from the config); one line each."""
    running = {name: info["pid"] for name, info in actual.items()
               if info["statename"] == "RUNNING" and info["pid"]}
    with conn, conn.cursor() as cur:
        cur.execute("SELECT frontend, pid, count(*) FROM browsers WHERE instance = %s"
                    " AND host = %s GROUP BY frontend, pid ORDER BY frontend, pid",
                    (instance, host))
        stale = [(name, pid, n) for name, pid, n in cur.fetchall() if running.get(name) != pid]
        for name, pid, _ in stale:
            cur.execute("DELETE FROM browsers WHERE instance = %s AND host = %s"
                        " AND frontend = %s AND pid = %s", (instance, host, name, pid))
    return [f"browsers: removed {n} row(s) of {name} pid {pid}, which no longer runs"
            for name, pid, n in stale]
