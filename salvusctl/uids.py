"""Session uid ranges of the appliances on one host: chosen once, never shared.

Each data folder's sessions run as uids of its own range. Two appliances whose
ranges overlapped would share uids, and with them processes, files and
limits. So the ranges live in one host-wide file (``REGISTRY``), changed under
a lock: init picks the lowest free block; start records what the config asks
for now; a range that overlaps another live data folder's is refused, with a
free base named. An entry whose data folder is gone (or holds another
appliance now) is stale and dropped. A claim holds from the moment it is
made: the data folder gets a marker (``MARKER``) under the lock, because its
salvus.conf only appears at the end of init, and another salvusctl
meanwhile must not take the entry for stale and hand its range out again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import time
from pathlib import Path

from salvusctl.config import Config
from salvusctl.errors import ConfigError

REGISTRY = Path("/var/lib/salvus/uid-ranges.json")
FIRST = 200_000  # above every ordinary user and system account
BLOCK = 100_000  # init hands out blocks of this size (or of what the config needs)
LOCK_WAIT = 30.0  # seconds to wait for another salvusctl's hold of the registry
MARKER = ".salvus-instance"  # in a data folder: the instance its uid range is for


def needed(config: Config, base: int | None = None) -> range:
    """The uids this host's workers hand out: each worker one per session and
    spare (worker i from uid_base + i * that on: unique on every host)."""
    per_worker = config.get("worker", "max_sessions") + config.get("worker", "spares")
    first = base if base is not None else config.get("worker", "uid_base")
    here = config.topology.indices("worker")
    return range(first + here.start * per_worker, first + here.stop * per_worker)


def span(config: Config) -> int:
    """How many uids the workers of every host hand out together."""
    per_worker = config.get("worker", "max_sessions") + config.get("worker", "spares")
    return config.topology.total("worker") * per_worker


@contextlib.contextmanager
def _locked(registry: Path):
    registry.parent.mkdir(parents=True, exist_ok=True)
    # Root's alone (0600): no other user can open it, so none can hold the lock.
    fd = os.open(registry.with_suffix(".lock"), os.O_WRONLY | os.O_CREAT, 0o600)
    os.fchmod(fd, 0o600)
    with open(fd, "w") as lock:
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ConfigError(f"another salvusctl has held {lock.name} for "
                                      f"{LOCK_WAIT:.0f} s; wait for it to finish, or "
                                      "stop it") from None
                time.sleep(0.1)
        try:
            entries = json.loads(registry.read_text()) if registry.exists() else []
        except ValueError:
            entries = []  # a damaged file holds nothing we can trust; rebuilt below
        live = [e for e in entries if _alive(e)]
        yield live
        temporary = registry.with_suffix(".new")
        temporary.write_text(json.dumps(live, indent=1) + "\n")
        os.chmod(temporary, 0o600)  # it names every appliance's data folder
        temporary.replace(registry)


def _alive(entry: dict) -> bool:
    """Whether the data folder of an entry still holds that appliance."""
    try:
        data, instance = Path(entry["data"]), entry["instance"]
        if (data / MARKER).is_file() and (data / MARKER).read_text().strip() == instance:
            return True
        return f"instance = {instance}\n" in (data / "salvus.conf").read_text()
    except (OSError, KeyError, TypeError):
        return False


def _mark(data: Path, instance: str) -> None:
    """The data folder holds its claim from now on (see the module's docstring)."""
    with contextlib.suppress(OSError):  # a folder not made yet: salvus.conf will say
        (data / MARKER).write_text(instance + "\n")


def _overlaps(uids: range, entry: dict) -> bool:
    return uids.start <= entry["last"] and entry["first"] <= uids.stop - 1


def _users_in(uids: range) -> list[str]:
    return [u.pw_name for u in pwd.getpwall() if u.pw_uid in uids]


def _free_base(entries: list[dict], size: int) -> int:
    base = FIRST
    while True:
        block = range(base, base + max(size, BLOCK))
        clash = [e for e in entries if _overlaps(block, e)]
        if not clash and not _users_in(block):
            return base
        base += BLOCK


def pick(data: Path, instance: str, size: int, registry: Path = REGISTRY) -> int:
    """A base for a new data folder whose range of ``size`` uids is free; recorded."""
    with _locked(registry) as entries:
        base = _free_base([e for e in entries if e["data"] != str(data)], size)
        entries.append({"data": str(data), "instance": instance, "first": base,
                        "last": base + max(size, BLOCK) - 1})
        _mark(data, instance)
    return base


def claim(data: Path, instance: str, uids: range, registry: Path = REGISTRY,
          exact: bool = False) -> None:
    """Record ``uids`` as this data folder's, or refuse with a free base named.
    ``exact``: hold just these (one host's share of a range that several
    hosts' data folders, maybe on one machine, divide), not a whole block."""
    with _locked(registry) as entries:
        others = [e for e in entries if e["data"] != str(data)]
        if not uids:  # no workers here: nothing to hold
            entries[:] = others
            return
        clash = next((e for e in others if _overlaps(uids, e)), None)
        users = _users_in(uids)
        if clash or users:
            holder = (f"the sessions of {clash['data']} ({clash['first']}-{clash['last']})"
                      if clash else "user " + ", ".join(users[:3]))
            free = _free_base(others, len(uids))
            raise ConfigError(
                f"session uids {uids.start}-{uids.stop - 1} overlap {holder}; set "
                f"[worker] uid_base = {free} (free) in {data / 'salvus.conf'}")
        block = next((e for e in entries if e["data"] == str(data)), None)
        if exact or block is None or \
                not block["first"] <= uids.start <= uids.stop - 1 <= block["last"]:
            last = uids.stop - 1 if exact else max(uids.stop - 1, uids.start + BLOCK - 1)
            entries[:] = [*others, {"data": str(data), "instance": instance,
                                    "first": uids.start, "last": last}]
        _mark(data, instance)
