"""Requests that come through our own haproxies: the browser's address.

Behind haproxy every request comes from haproxy's address, so the per-IP
quotas (sessions per IP, API rates) would count every browser as one. The
haproxies add ``X-Forwarded-For`` (the address they took the connection
from) and ``X-Forwarded-Proto``. Those headers are believed only when the
connection itself comes from a trusted proxy (``--trusted-proxies``): anyone
else could write them to dodge a quota. Of ``X-Forwarded-For`` the last
address counts, the one our haproxy appended; what a client wrote before it
is not trusted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable


class TrustedProxies:
    """WSGI middleware: REMOTE_ADDR and the URL scheme as the trusted proxy saw them."""

    def __init__(self, app: Callable, proxies: Iterable[str]):
        self.app = app
        self.proxies = frozenset(proxies)

    def __call__(self, environ: dict, start_response: Callable):
        if environ.get("REMOTE_ADDR") in self.proxies:
            forwarded = environ.get("HTTP_X_FORWARDED_FOR", "").split(",")[-1].strip()
            if forwarded:
                environ["REMOTE_ADDR"] = forwarded
            if environ.get("HTTP_X_FORWARDED_PROTO") in ("http", "https"):
                environ["wsgi.url_scheme"] = environ["HTTP_X_FORWARDED_PROTO"]
        return self.app(environ, start_response)
