"""The browser must not be a confused deputy: what other sites may not do
through it, and the headers every response carries (from one place).

- Requests that act (the websocket, which runs code, and every POST) are
  refused when they come from another site: a browser sends ``Origin`` with
  each of them, and it must be our own host or one the admin allows for
  embedding (``[web] allowed_origins``). Scripts and curl send no Origin
  (and no ``Sec-Fetch-Site: cross-site``): they are not browsers acting for
  someone else, and go through.
- Every response gets a Content-Security-Policy (no inline script, nothing
  from elsewhere, framing only by allowed origins), ``nosniff``, a
  Referrer-Policy, and X-Frame-Options when no embedding is allowed. A route
  may set a stricter policy of its own (blobs do): it is kept.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

from flask import Flask, Request, Response, request

from web.replies import json_error

# KaTeX and CodeMirror style elements through style attributes: styles may be
# inline, scripts may not. connect-src 'self' covers our own ws:/wss: too.
POLICY = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
          "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; "
          "object-src 'none'; base-uri 'none'; form-action 'self'; "
          "frame-ancestors {ancestors}")


def local_names() -> set[str]:
    """The names a host answers to without asking: localhost and its own names."""
    names = {"localhost", socket.gethostname().lower()}
    with contextlib.suppress(OSError):
        names.add(socket.getfqdn().lower())
    return names


def served_name(request: Request, names: set[str]) -> bool:
    """Whether the request asks for us: an IP address, or one of ``names``. A
    page of another site that points its own name at our address (DNS
    rebinding) asks for that name, and is refused."""
    host = request.host.lower()
    name = host[1:host.index("]")] if host.startswith("[") and "]" in host \
        else host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return name in names


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def from_allowed_origin(request: Request, allowed: tuple[str, ...],
                        peers: Callable[[], list[str]] = list) -> bool:
    """``peers``: the other frontends' URLs; their pages fail over to us."""
    origin = request.headers.get("Origin")
    if origin is None:
        return request.headers.get("Sec-Fetch-Site") != "cross-site"
    if origin in allowed or origin.lower() in {origin_of(url) for url in peers()}:
        return True
    # Our own page: its origin names the host the browser asked for. (Behind a
    # TLS proxy the scheme differs from the one we see; the host does not.)
    return origin != "null" and urlsplit(origin).netloc.lower() == request.host.lower()


# The 3D viewer's page: framed by our own pages only, always sandboxed (the
# sandbox directive holds even if it is opened on its own), scripts from us.
VIEWER_PAGE = "viewer3d.html"
VIEWER_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; "
                 "img-src 'self' data: blob:; frame-ancestors 'self'; sandbox allow-scripts")


def viewer_headers(response: Response) -> None:
    response.headers["Content-Security-Policy"] = VIEWER_POLICY
    response.headers["X-Frame-Options"] = "SAMEORIGIN"


def install(app: Flask, allowed: tuple[str, ...], names: set[str],
            peers: Callable[[], list[str]] = list) -> None:
    """Refuse what other sites ask, and give every response its headers.
    ``names``: the host names served; ``peers``: the live frontends' URLs,
    which our pages may connect to."""
    ancestors = " ".join(("'self'", *allowed)) if allowed else "'none'"
    policy = POLICY.format(ancestors=ancestors)

    @app.before_request
    def refuse_other_sites() -> Response | None:
        if not served_name(request, names):
            return json_error(421, f"this appliance does not answer to the name "
                                   f"{request.host[:80]!r}; its admin lists the names it "
                                   "serves in [web] server_names")
        acts = request.method not in ("GET", "HEAD", "OPTIONS") or request.path == "/ws"
        if acts and not from_allowed_origin(request, allowed, peers):
            return json_error(403, "requests from other sites are refused; open the "
                                   "worksheet itself, or ask the admin to allow your site")
        if request.path == "/ws":
            # No permessage-deflate: compressing every small message costs the
            # frontend (one process for all its browsers) more than it saves.
            request.environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
        return None

    @app.after_request
    def headers(response: Response) -> Response:
        sockets = " ".join(sorted({origin_of(url).replace("http", "ws", 1) for url in peers()}))
        response.headers.setdefault(
            "Content-Security-Policy",
            policy.replace("connect-src 'self'", f"connect-src 'self' {sockets}".rstrip()))
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if not allowed:
            response.headers.setdefault("X-Frame-Options", "DENY")
        return response
