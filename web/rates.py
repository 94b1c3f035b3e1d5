"""How often an account and an address may start sessions and run cells.

Each limit is COUNT/UNIT (``[accounts]``): a signed-in browser is counted
under its account and under its address, an anonymous one under its address
with the (tighter) anonymous limits. An address of this host itself
(loopback: scripts, tests and benchmarks on the appliance's own host; browsers
come through haproxy, whose X-Forwarded-For names theirs) is not counted by
address; its accounts still are. The counts live in memcached, so every
frontend counts together; while memcached is away each frontend counts on its
own (limits still hold, per frontend) rather than let everything through.

A refusal says what was limited and when to try again (``retry_after``
seconds): the websocket sends it as a ``rate_limited`` protocol error.
"""

from __future__ import annotations

import ipaddress
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import FixedWindowRateLimiter

from web import wire


@dataclass(frozen=True)
class RateLimits:
    starts: str = "60/minute"  # session starts per account
    executions: str = "1200/minute"  # cells run per account
    address_starts: str = "600/minute"  # per address of signed-in browsers (a NAT)
    address_executions: str = "12000/minute"
    anonymous_starts: str = "120/minute"  # per address of anonymous browsers
    anonymous_executions: str = "3000/minute"


WHAT = {"starts": "sessions started", "executions": "cells run"}


def _this_host(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


class Rates:
    def __init__(self, limits: RateLimits, memcached: str | None):
        self.limits = limits
        self._client = None
        self.shared = FixedWindowRateLimiter(
            storage_from_string(f"memcached://{memcached}", connect_timeout=0.2,
                                timeout=0.2, client_getter=self._one_client)
        ) if memcached else None
        self.local = FixedWindowRateLimiter(MemoryStorage())

    def close(self) -> None:
        """Close the memcached client's connections (a frontend's end, tests)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def _one_client(self, module, hosts, **options):
        """One pooled client for every greenlet: the storage keeps a client per
        thread, and under gevent each websocket's greenlet is one (a
        connection to memcached each, beyond its limit at 1,000 pages)."""
        if self._client is None:
            self._client = module.PooledClient(*hosts, **options)
        return self._client

    def check(self, kind: str, account: str | None, ip: str) -> None:
        """Count one ``kind`` ("starts" or "executions"); a WireError when it
        is one too many for the account or the address."""
        pairs = []
        if account is not None:
            pairs.append((f"account:{account}", getattr(self.limits, kind)))
        if not _this_host(ip):
            which = f"address_{kind}" if account is not None else f"anonymous_{kind}"
            pairs.append((f"ip:{ip}", getattr(self.limits, which)))
        for who, text in pairs:
            limit = parse(text)
            if not self._hit(limit, kind, who):
                wait = self._wait(limit, kind, who)
                whose = "this account" if who.startswith("account:") else "your address"
                raise wire.WireError(
                    "rate_limited",
                    f"too many {WHAT[kind]} from {whose} (the limit is {text}); "
                    f"try again in {wait} s", {"retry_after": wait})

    def _hit(self, limit: RateLimitItem, kind: str, who: str) -> bool:
        if self.shared is not None:
            try:
                return self.shared.hit(limit, kind, who)
            except Exception:  # memcached is away: count here meanwhile
                pass
        return self.local.hit(limit, kind, who)

    def _wait(self, limit: RateLimitItem, kind: str, who: str) -> int:
        for limiter in filter(None, (self.shared, self.local)):
            try:
                reset, _ = limiter.get_window_stats(limit, kind, who)
                return max(1, math.ceil(reset - time.time()))
            except Exception:
                continue
        return limit.get_expiry()
