"""The Salvus web frontend: ``create_app(config)`` builds the Flask app.

Config keys: NAME, DSN_FILE (database; blobs, health, the browsers table),
WORKERS_FILE (the workers list salvusctl writes), CURVE_KEY (this frontend's
CURVE certificate for the workers and the bus), FRONTENDS_FILE and BUS_BIND
(the bus to the other frontends, web/bus.py; PUBLIC_URL is announced on it),
INSTANCE and HOST (where this frontend is, for the browsers table), QUOTAS
(web.sessions.Quotas), API_LIMITS (web.api.ApiLimits), MEMCACHED,
ALLOWED_ORIGINS (sites that may embed us or call us from a page).
Without WORKERS_FILE the app serves pages and health only (unit tests).
``create_app`` starts nothing: ``app.extensions["salvus"].start()`` starts the
frontend's greenlets (web/__main__.py does, when it serves).
"""

from __future__ import annotations

import json
import secrets
import socket
import sys
import time
import traceback
from pathlib import Path

from flask import Flask, Response, jsonify, request, send_from_directory
from flask_limiter import Limiter
from flask_limiter.errors import RateLimitExceeded
from flask_sock import Sock
from werkzeug.exceptions import HTTPException

from sage_worker import curve
from web import api, blobs, permalinks, security
from web.browsers import BrowserTable, Place
from web.bus import Bus
from web.cache import Cache
from web.db import Database, DatabaseUnavailable
from web.session_table import SessionTable
from web.sessions import Quotas, SessionManager
from web.websocket import serve_browser
from web.workers import WorkerPool

STATIC = Path(__file__).parent / "static"
BROWSER_COOKIE = "salvus_browser"


def log(message: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    try:
        sys.stderr.write(f"{stamp}Z {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def create_app(config: dict | None = None) -> Flask:
    app = Flask(__name__, static_folder=None)
    app.config.update(NAME="web", STARTED=time.time(), QUOTAS=Quotas(), DSN_FILE=None,
                      API_LIMITS=api.ApiLimits(), MAX_CONTENT_LENGTH=2 << 20, MEMCACHED=None,
                      WORKERS_FILE=None, CURVE_KEY=None, ALLOWED_ORIGINS=(), SERVER_NAMES=(),
                      FRONTENDS_FILE=None, BUS_BIND=None, PUBLIC_URL="", INSTANCE="salvus",
                      HOST=socket.gethostname(),
                      SOCK_SERVER_OPTIONS={"ping_interval": 20,
                                           "max_message_size": 2 << 20})
    app.config.update(config or {})
    name = app.config["NAME"]
    say = lambda message: log(f"{name}: {message}")  # noqa: E731
    db = Database(app.config["DSN_FILE"])
    cache = Cache(app.config["MEMCACHED"], say)
    manager = SessionManager(db, app.config["QUOTAS"], say)
    key = curve.load_pair(Path(app.config["CURVE_KEY"])) if app.config["CURVE_KEY"] else None
    if app.config["WORKERS_FILE"]:
        manager.pool = WorkerPool(app.config["WORKERS_FILE"], manager.client(name, key), say)
    if app.config["FRONTENDS_FILE"]:
        # Every frontend (and salvusctl message) holds the one web key: it is
        # the bus's allow-list.
        manager.bus = Bus(name, key, {key.public} if key else set(), app.config["BUS_BIND"],
                          Path(app.config["FRONTENDS_FILE"]), manager.deliver, say,
                          http=app.config["PUBLIC_URL"])
    if db.configured:
        manager.table = BrowserTable(db, Place.here(app.config["INSTANCE"], app.config["HOST"],
                                                    name), say)
        manager.records = SessionTable(db, say)
    app.extensions["salvus"] = manager
    allowed = tuple(app.config["ALLOWED_ORIGINS"])
    names = security.local_names() | {n.lower() for n in app.config["SERVER_NAMES"]}
    security.install(app, allowed, manager.frontends)
    limiter = _limiter(app)
    sock = Sock(app)
    health_cache: dict = {}
    slots = api.Slots()

    @app.get("/")
    def index():
        response = send_from_directory(STATIC, "index.html", max_age=0)
        if not request.cookies.get(BROWSER_COOKIE):
            response.set_cookie(BROWSER_COOKIE, secrets.token_urlsafe(16), httponly=True,
                                samesite="Lax", max_age=365 * 86400)
        return response

    @app.before_request
    def refuse_other_sites():
        if not security.served_name(request, names):
            return _json_error(421, f"this appliance does not answer to the name "
                                    f"{request.host[:80]!r}; its admin lists the names it "
                                    "serves in [web] server_names")
        acts = request.method not in ("GET", "HEAD", "OPTIONS") or request.path == "/ws"
        if acts and not security.from_allowed_origin(request, allowed, manager.frontends):
            return _json_error(403, "requests from other sites are refused; open the "
                                    "worksheet itself, or ask the admin to allow your site")
        if request.path == "/ws":
            # No permessage-deflate: compressing every small message costs the
            # frontend (one process for all its browsers) more than it saves.
            request.environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
        return None

    @app.post("/api/share")
    @limiter.limit(lambda: app.config["API_LIMITS"].rate_per_ip)
    def share():
        try:
            content = permalinks.normalize(_read_json('{"cells": [{"code": ...}]}'))
            link = permalinks.store(db, content)
        except (permalinks.ShareError, api.ApiError) as err:
            return _json_error(err.status, err.message)
        except DatabaseUnavailable:
            return _unavailable()
        return jsonify(id=link, url=f"/s/{link}")

    @app.get("/s/<link>")
    def shared(link: str):
        try:
            content = permalinks.open_link(db, link, cache) if db.configured else None
        except DatabaseUnavailable:
            return send_from_directory(STATIC, "unavailable.html", max_age=0), 503, \
                {"Retry-After": "5"}
        if content is None:
            return send_from_directory(STATIC, "missing.html", max_age=0), 404
        page = (STATIC / "index.html").read_text()
        page = page.replace("<!--SHARED-->", '<script id="shared" type="application/json">'
                            f"{permalinks.embeddable_json(content)}</script>")
        return Response(page, mimetype="text/html", headers={"Cache-Control": "no-cache"})

    @app.get("/s")
    def shared_in_url():
        # The content travels in the URL's fragment (#z=...): no database needed.
        return send_from_directory(STATIC, "index.html", max_age=0)

    @app.get("/favicon.ico")
    def favicon():
        return send_from_directory(STATIC, "favicon.svg", max_age=86400,
                                   mimetype="image/svg+xml")

    @app.get("/static/<path:name>")
    def static_file(name: str):
        age = 86400 if name.startswith("vendor/") else 300
        response = send_from_directory(STATIC, name, max_age=age)
        # Public files. The 3D viewer runs in a sandboxed frame (an origin of
        # its own), from which its module scripts are fetched cross-origin.
        response.headers["Access-Control-Allow-Origin"] = "*"
        if name == security.VIEWER_PAGE:
            security.viewer_headers(response)
        return response

    @app.get("/blobs/<sha1>")
    def blob(sha1: str):
        if not blobs.SHA1.match(sha1):
            return _json_error(404, "no such blob")
        cached = cache.get(f"blob:{sha1}")
        if cached is not None:
            mime, _, data = cached.partition(b"\n")
            mime = mime.decode(errors="replace")
        else:
            try:
                found = blobs.load(db, sha1) if db.configured else None
            except DatabaseUnavailable:
                return _unavailable()
            if found is None:
                return _json_error(404, "no such blob")
            mime, data = found
            cache.set(f"blob:{sha1}", mime.encode() + b"\n" + data)
        served = blobs.served_as(mime)
        return Response(data, mimetype=served, headers={
            "Cache-Control": "public, max-age=31536000, immutable", "ETag": sha1,
            # An SVG opened on its own must not run anything.
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                       "sandbox",
            "Content-Disposition": "inline" if served == mime else "attachment"})

    @app.get("/health")
    def health():
        # Answers fast: the database check is cached for a second.
        now = time.monotonic()
        if now - health_cache.get("at", 0) > 1.0:
            health_cache.update(at=now, database=_database_ok(db))
        workers = manager.pool.live_count() if manager.pool else 0
        ok = health_cache["database"] and (workers > 0 or manager.pool is None)
        body = {"status": "ok" if ok else "degraded", "name": name, "workers": workers,
                "database": health_cache["database"], "sessions": len(manager.sessions),
                "detached": manager.detached_count(), "browsers": len(manager.connections),
                "uptime": round(time.time() - app.config["STARTED"], 3)}
        if manager.bus is not None:
            body["bus"] = {"peers": sorted(manager.bus.live_peers()), "lost": manager.bus.lost}
        return jsonify(body), 200 if ok else 503

    @app.post("/api/execute")
    @limiter.limit(lambda: app.config["API_LIMITS"].rate_per_ip)
    @limiter.limit(lambda: app.config["API_LIMITS"].rate_total, key_func=lambda: "everyone")
    def api_execute():
        limits = app.config["API_LIMITS"]
        try:
            body = _read_json('{"code": ...}') if request.is_json else request.form.to_dict()
            if not isinstance(body, dict):
                raise api.ApiError(400, "send JSON ({\"code\": ...}) or a form with 'code'")
            code, engine, timeout = api.parse(body, limits)
            with slots.take(request.remote_addr or "?", limits):
                return jsonify(api.execute(manager, code, engine, timeout, limits))
        except api.ApiError as err:
            return _json_error(err.status, err.message, err.retry_after)

    @app.errorhandler(RateLimitExceeded)
    def rate_limited(error: RateLimitExceeded):
        return _json_error(429, f"too many requests ({error.description} per address or "
                                "in all); wait a little", 60)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        if request.path.startswith("/api/") or error.code == 413:
            text = {413: f"request body over {app.config['MAX_CONTENT_LENGTH']} bytes; "
                         "send less"}.get(error.code, f"{error.name}: {error.description}")
            return _json_error(error.code or 400, text)
        return error

    @app.errorhandler(Exception)
    def unexpected(error: Exception):
        where = traceback.extract_tb(error.__traceback__)[-1]
        say(f"{request.method} {request.path}: {error!r} at {where.filename}:{where.lineno}")
        return _json_error(500, "an internal error; it was logged")

    @sock.route("/ws")
    def websocket(ws):
        browser = request.cookies.get(BROWSER_COOKIE) or f"ip:{request.remote_addr}"
        serve_browser(ws, manager, browser, request.remote_addr or "?")

    return app


def _limiter(app: Flask) -> Limiter:
    """Request rates per IP and in all, shared by every frontend through
    memcached; without memcached (or while it is gone) each frontend counts
    on its own, and never fails a request because counting failed."""
    address = app.config["MEMCACHED"]
    return Limiter(lambda: request.remote_addr or "?", app=app,
                   storage_uri=f"memcached://{address}" if address else "memory://",
                   storage_options={"connect_timeout": 0.2, "timeout": 0.2} if address else {},
                   strategy="fixed-window", swallow_errors=True,
                   in_memory_fallback_enabled=True, headers_enabled=True,
                   retry_after="delta-seconds")


def _read_json(example: str):
    """The request's JSON body; anything else is a 400 naming the problem."""
    try:
        return json.loads(request.get_data(cache=True) or b"null")
    except RecursionError:
        raise api.ApiError(400, f"the JSON body is nested too deeply; send {example}") \
            from None
    except (UnicodeDecodeError, ValueError):
        raise api.ApiError(400, f"the body is not valid JSON; send {example}") from None


def _json_error(status: int, message: str, retry_after: int | None = None) -> Response:
    response = jsonify(error=message)
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def _unavailable() -> Response:
    return _json_error(503, "the database is unavailable right now; try again in a moment",
                       5)


def _database_ok(db: Database) -> bool:
    if not db.configured:
        return True
    try:
        return db.execute("SELECT 1") == [(1,)]
    except Exception:
        return False
