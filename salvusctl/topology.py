"""Which host runs which program, and where each host is reached.

One config serves every host of an appliance. ``[salvus] hosts`` names the
hosts (``a=10.0.0.1 b=10.0.0.2``); ``[web] hosts``, ``[worker] hosts`` and
``[haproxy] hosts`` place ``count`` programs of their kind on each host they
list; ``[database] host`` places the embedded cluster. Each host's copy of
the data folder knows which host it is from ``DATA/host`` (``salvusctl init
--host NAME`` writes it).

Programs of a kind are numbered across hosts in the order their hosts are
listed, so every name (web2, worker1) is unique in the whole appliance, and
so are its ports and its workers' session uids: the registry, the session
table and the bus name programs without their host, and several hosts may
share one machine (the multi-host test runs them in network namespaces).

With no ``[salvus] hosts`` there is one host, this one, at ``[salvus] bind``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from salvusctl.errors import ConfigError

if TYPE_CHECKING:
    from salvusctl.config import Config

PLACED = ("web", "worker", "haproxy")  # kinds whose hosts the config lists


@dataclass(frozen=True)
class Topology:
    hosts: dict[str, str]  # name -> address, in the config's order
    this: str
    placement: dict[str, tuple[str, ...]]  # kind -> its hosts, in order
    counts: dict[str, int]  # kind -> programs per host
    database: str | None  # the embedded cluster's host (None: a DSN)

    @property
    def several(self) -> bool:
        return len(self.hosts) > 1 or self.this not in self.hosts

    @property
    def address(self) -> str:
        return self.hosts[self.this]

    def indices(self, kind: str, host: str | None = None) -> range:
        """The numbers of ``kind``'s programs on ``host`` (this host by default)."""
        host = self.this if host is None else host
        placed = self.placement[kind]
        if host not in placed:
            return range(0)
        first = placed.index(host) * self.counts[kind]
        return range(first, first + self.counts[kind])

    def total(self, kind: str) -> int:
        return len(self.placement[kind]) * self.counts[kind]

    def host_of(self, kind: str, index: int) -> str:
        return self.placement[kind][index // self.counts[kind]]

    def runs_database(self, host: str | None = None) -> bool:
        return self.database == (self.this if host is None else host)

    def runs_frontends(self, host: str | None = None) -> bool:
        return bool(self.indices("web", host))


def _pairs(text: str) -> dict[str, str]:
    return dict(word.split("=", 1) for word in text.split())


def build(config: Config, this: str | None) -> Topology:
    """The hosts of ``config`` as seen from host ``this`` (None: the config's
    [salvus] host, for one host)."""
    hosts = _pairs(config.get("salvus", "hosts"))
    counts = {kind: config.get(kind, "count") for kind in PLACED}
    if not hosts:
        name = config.get("salvus", "host") if this is None else this
        return Topology({name: config.get("salvus", "bind")}, name,
                        {kind: (name,) for kind in PLACED}, counts,
                        name if config.embedded_db else None)
    placement = {}
    for kind in PLACED:
        chosen = tuple(config.get(kind, "hosts").split()) or tuple(hosts)
        _known(hosts, chosen, f"[{kind}] hosts")
        placement[kind] = chosen
    database = None
    if config.embedded_db:
        database = config.get("database", "host") or next(iter(hosts))
        _known(hosts, (database,), "[database] host")
    if this is not None:
        _known(hosts, (this,), "this data folder's host (DATA/host, from init --host)")
    return Topology(hosts, this if this is not None else "", placement, counts, database)


def _known(hosts: dict[str, str], names: tuple[str, ...], where: str) -> None:
    for name in names:
        if name not in hosts:
            raise ConfigError(f"{where} names {name!r}, which is not in [salvus] hosts "
                              f"({', '.join(hosts)}); add it there or fix the name")


def on_host(config: Config, this: str | None) -> Config:
    """``config`` as host ``this`` runs it: [salvus] host is its name and
    [salvus] bind its address, so each program listens where its host is."""
    topology = build(config, this)
    if not topology.several:
        return config.with_topology(topology)
    if not topology.this:
        raise ConfigError("this data folder does not know which of [salvus] hosts it is on; "
                          "run `salvusctl init --host NAME` in it")
    return config.with_topology(topology, {("salvus", "host"): topology.this,
                                           ("salvus", "bind"): topology.address})


def as_host(config: Config, host: str) -> Config:
    """The same config as another host of it sees it (for that host's
    programs' addresses)."""
    return on_host(config, host) if config.topology.several else config
