"""The pages and files a browser loads: the worksheet, permalinks, static
files and blobs. Every route here is a GET and changes nothing."""

from __future__ import annotations

import secrets
from pathlib import Path

from flask import Blueprint, Response, abort, request, send_from_directory

from web import assets, blobs, permalinks, security
from web.db import DatabaseUnavailable
from web.replies import json_error, unavailable
from web.services import services

STATIC = Path(__file__).parent / "static"
# Who a browser is until accounts exist: it owns its sessions and counts
# against the per-browser quota. The websocket reads it.
BROWSER_COOKIE = "salvus_browser"

pages = Blueprint("pages", __name__)


@pages.get("/")
def index():
    response = assets.page_response(request, "index.html")
    if not request.cookies.get(BROWSER_COOKIE):
        response.set_cookie(BROWSER_COOKIE, secrets.token_urlsafe(16), httponly=True,
                            samesite="Lax", max_age=365 * 86400)
    return response


@pages.get("/s/<link>")
def shared(link: str):
    found = services()
    try:
        content = permalinks.open_link(found.db, link, found.cache) \
            if found.db.configured else None
    except DatabaseUnavailable:
        response = assets.page_response(request, "unavailable.html", status=503)
        response.headers["Retry-After"] = "5"
        return response
    if content is None:
        return assets.page_response(request, "missing.html", status=404)
    return assets.page_response(request, "index.html", insert=(
        '<script id="shared" type="application/json">'
        f"{permalinks.embeddable_json(content)}</script>"))


@pages.get("/s")
def shared_in_url():
    # The content travels in the URL's fragment (#z=...): no database needed.
    return assets.page_response(request, "index.html")


@pages.get("/favicon.ico")
def favicon():
    return send_from_directory(STATIC, "favicon.svg", max_age=86400, mimetype="image/svg+xml")


@pages.get("/static/<path:name>")
def static_file(name: str):
    # Minified, compressed, by hashed or plain name: web/assets.py.
    response = assets.static_response(request, name)
    if response is None:
        abort(404)
    # Public files. The 3D viewer runs in a sandboxed frame (an origin of its
    # own), from which its module scripts are fetched cross-origin.
    response.headers["Access-Control-Allow-Origin"] = "*"
    if name == security.VIEWER_PAGE:
        security.viewer_headers(response)
    return response


@pages.get("/blobs/<sha1>")
def blob(sha1: str):
    if not blobs.SHA1.match(sha1):
        return json_error(404, "no such blob")
    try:
        loaded = stored_blob(sha1)
    except DatabaseUnavailable:
        return unavailable()
    if loaded is None:
        return json_error(404, "no such blob")
    mime, data = loaded
    served = blobs.served_as(mime)
    return Response(data, mimetype=served, headers={
        "Cache-Control": "public, max-age=31536000, immutable", "ETag": sha1,
        # An SVG opened on its own must not run anything.
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; sandbox",
        "Content-Disposition": "inline" if served == mime else "attachment"})


def stored_blob(sha1: str) -> tuple[str, bytes] | None:
    """(mime, bytes) of a blob, from memcached or else the database (which
    fills memcached); None when there is none. Raises DatabaseUnavailable."""
    found = services()
    cached = found.cache.get(f"blob:{sha1}")
    if cached is not None:
        mime, _, data = cached.partition(b"\n")
        return mime.decode(errors="replace"), data
    loaded = blobs.load(found.db, sha1) if found.db.configured else None
    if loaded is not None:
        found.cache.set(f"blob:{sha1}", loaded[0].encode() + b"\n" + loaded[1])
    return loaded
