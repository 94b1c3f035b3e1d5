"""Hosts on one machine: network namespaces joined by a bridge.

``Network`` makes, per host, a namespace with loopback and one veth whose
other end is on a bridge in the test's own namespace; the bridge has the
subnet's first address, so the test and a browser it starts reach every host,
and the hosts reach each other. Everything (processes inside, namespaces,
links) is removed by ``close``, also after a failure half-way through.

    test (10.x.y.1, bridge) ──┬── veth ── [ns db]    10.x.y.10
                              ├── veth ── [ns web-a] 10.x.y.11
                              └── ...
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30,
                            check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


class Network:
    def __init__(self, names: list[str]):
        tag = f"{os.getpid() % 10000:04d}{random.randrange(100):02d}"
        self.tag = tag
        self.bridge = f"svb{tag}"
        self.subnet = f"10.{random.randrange(200, 250)}.{random.randrange(1, 250)}"
        self.gateway = f"{self.subnet}.1"
        self.addresses = {name: f"{self.subnet}.{10 + i}" for i, name in enumerate(names)}
        self.namespaces = {name: f"salvus-{tag}-{name}" for name in names}
        self._links = {name: f"sv{tag}{i}" for i, name in enumerate(names)}
        self._made: list[str] = []

    def open(self) -> Network:
        ip("link", "add", self.bridge, "type", "bridge")
        self._made.append("bridge")
        ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for name, namespace in self.namespaces.items():
            ip("netns", "add", namespace)
            self._made.append(name)
            outside = self._links[name]
            ip("link", "add", outside, "type", "veth", "peer", "name", "eth0",
               "netns", namespace)
            ip("link", "set", outside, "master", self.bridge)
            ip("link", "set", outside, "up")
            for args in (("link", "set", "lo", "up"),
                         ("addr", "add", f"{self.addresses[name]}/24", "dev", "eth0"),
                         ("link", "set", "eth0", "up")):
                ip("-n", namespace, *args)
        return self

    def run(self, name: str, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        """``argv`` inside host ``name``'s namespace."""
        return subprocess.run(["ip", "netns", "exec", self.namespaces[name], *argv],
                              **kwargs)

    def run_async(self, name: str, argv: list[str]) -> subprocess.Popen:
        """``argv`` started inside host ``name``'s namespace, its output piped."""
        return subprocess.Popen(["ip", "netns", "exec", self.namespaces[name], *argv],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL)

    def cut(self, name: str) -> None:
        """Host ``name`` loses its link (its cable pulled: it runs on, alone)."""
        ip("link", "set", self._links[name], "down")

    def mend(self) -> None:
        """Every link up again (so that the hosts stop quickly, each able to
        tell its database it stops)."""
        for link in self._links.values():
            ip("link", "set", link, "up", check=False)

    def pids(self, name: str) -> list[int]:
        result = ip("netns", "pids", self.namespaces[name], check=False)
        return [int(p) for p in result.stdout.split()]

    def kill_all(self, name: str) -> None:
        """Every process of host ``name`` dies at once (the host fails)."""
        for _ in range(50):
            pids = self.pids(name)
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)

    def close(self) -> None:
        for name in reversed(self._made):
            if name == "bridge":
                ip("link", "del", self.bridge, check=False)
            else:
                self.kill_all(name)
                ip("link", "del", self._links[name], check=False)
                ip("netns", "del", self.namespaces[name], check=False)
        self._made.clear()


@contextlib.contextmanager
def network(names: list[str]):
    net = Network(names)
    try:
        yield net.open()
    finally:
        net.close()
