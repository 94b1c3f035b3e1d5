"""memcached in front of blobs and permalinks: faster when there, harmless when not.

Every failure to reach memcached counts as a miss; the first one is logged
once ("unavailable, serving from PostgreSQL") and the next attempt waits a few
seconds, so a dead memcached costs neither errors nor a log line per request.
"""

from __future__ import annotations

import time
from collections.abc import Callable

RETRY_AFTER = 5.0
MAX_VALUE = 1000 * 1024  # memcached's default item limit is 1 MiB


class Cache:
    def __init__(self, address: str | None, say: Callable[[str], None]):
        self.say = say
        self.address = address
        self.client = None
        self.down_since: float | None = None
        if address:
            from pymemcache.client.base import Client

            # A unix socket's path, or HOST:PORT.
            host, _, port = address.rpartition(":")
            unix = address.startswith("/")
            self.client = Client(address if unix else (host, int(port)), connect_timeout=0.2,
                                 timeout=0.2, no_delay=not unix)

    def _usable(self) -> bool:
        if self.client is None:
            return False
        return self.down_since is None or time.monotonic() - self.down_since > RETRY_AFTER

    def _failed(self, exc: Exception) -> None:
        if self.down_since is None:
            self.say(f"memcached at {self.address} unavailable ({type(exc).__name__}); "
                     "serving from PostgreSQL until it is back")
        self.down_since = time.monotonic()
        self.client.close()

    def _worked(self) -> None:
        if self.down_since is not None:
            self.say(f"memcached at {self.address} is back")
            self.down_since = None

    def get(self, key: str) -> bytes | None:
        if not self._usable():
            return None
        try:
            value = self.client.get(key)
        except Exception as exc:  # any failure is a miss
            self._failed(exc)
            return None
        self._worked()
        return value

    def set(self, key: str, value: bytes, expire: int = 0) -> None:
        if not self._usable() or len(value) > MAX_VALUE:
            return
        try:
            self.client.set(key, value, expire=expire, noreply=False)
        except Exception as exc:
            self._failed(exc)
            return
        self._worked()
