"""The Salvus web frontend: ``create_app(config)`` builds the Flask app.

Config keys: NAME, DSN_FILE (database; blobs and health), WORKERS_FILE (the
workers list salvusctl writes), QUOTAS (web.sessions.Quotas). Without
WORKERS_FILE the app serves pages and health only (unit tests).
"""

from __future__ import annotations

import json
import secrets
import sys
import time
from pathlib import Path

from flask import Flask, Response, abort, jsonify, request, send_from_directory
from flask_sock import Sock

from web import api, blobs, permalinks
from web.cache import Cache
from web.db import Database
from web.sessions import Quotas, SessionManager
from web.websocket import serve_browser

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
                      WORKERS_FILE=None,
                      SOCK_SERVER_OPTIONS={"ping_interval": 20, "max_message_size": 16 << 20})
    app.config.update(config or {})
    name = app.config["NAME"]
    say = lambda message: log(f"{name}: {message}")  # noqa: E731
    db = Database(app.config["DSN_FILE"])
    cache = Cache(app.config["MEMCACHED"], say)
    manager = SessionManager(db, app.config["QUOTAS"], say)
    if app.config["WORKERS_FILE"]:
        from web.workers import WorkerPool

        manager.pool = WorkerPool(app.config["WORKERS_FILE"], manager.on_worker_message,
                                  manager.on_worker_lost, say)
    app.extensions["salvus"] = manager
    sock = Sock(app)
    health_cache: dict = {}

    @app.get("/")
    def index():
        response = send_from_directory(STATIC, "index.html", max_age=0)
        if not request.cookies.get(BROWSER_COOKIE):
            response.set_cookie(BROWSER_COOKIE, secrets.token_urlsafe(16), httponly=True,
                                samesite="Lax", max_age=365 * 86400)
        return response

    @app.post("/api/share")
    def share():
        try:
            content = permalinks.normalize(request.get_json(silent=True))
            link = permalinks.store(db, content)
        except permalinks.ShareError as err:
            return jsonify(error=err.message), err.status
        return jsonify(id=link, url=f"/s/{link}")

    @app.get("/s/<link>")
    def shared(link: str):
        content = permalinks.open_link(db, link, cache) if db.configured else None
        if content is None:
            return send_from_directory(STATIC, "missing.html", max_age=0), 404
        page = (STATIC / "index.html").read_text()
        data = json.dumps(content).replace("</", "<\\/")
        page = page.replace("<!--SHARED-->",
                            f'<script id="shared" type="application/json">{data}</script>')
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
        return send_from_directory(STATIC, name, max_age=age)

    @app.get("/blobs/<sha1>")
    def blob(sha1: str):
        cached = cache.get(f"blob:{sha1}") if blobs.SHA1.match(sha1) else None
        if cached is not None:
            mime, _, data = cached.partition(b"\n")
            mime = mime.decode()
        else:
            found = blobs.load(db, sha1) if db.configured else None
            if found is None:
                abort(404)
            mime, data = found
            cache.set(f"blob:{sha1}", mime.encode() + b"\n" + data)
        return Response(data, mimetype=mime, headers={
            "Cache-Control": "public, max-age=31536000, immutable", "ETag": sha1,
            # An SVG opened on its own must not run anything.
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
            "X-Content-Type-Options": "nosniff"})

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
                "uptime": round(time.time() - app.config["STARTED"], 3)}
        return jsonify(body), 200 if ok else 503

    @app.post("/api/execute")
    def api_execute():
        limits = app.config["API_LIMITS"]
        body = request.get_json(silent=True) if request.is_json else request.form.to_dict()
        try:
            if not isinstance(body, dict):
                raise api.ApiError(400, "send JSON ({\"code\": ...}) or a form with 'code'")
            code, engine, timeout = api.parse(body, limits)
            return jsonify(api.execute(manager, code, engine, timeout, limits))
        except api.ApiError as err:
            return jsonify(error=err.message), err.status

    @app.errorhandler(413)
    def too_large(_error):
        limit = app.config["MAX_CONTENT_LENGTH"]
        return jsonify(error=f"request body over {limit} bytes; send less"), 413

    @sock.route("/ws")
    def websocket(ws):
        browser = request.cookies.get(BROWSER_COOKIE) or f"ip:{request.remote_addr}"
        serve_browser(ws, manager, browser, request.remote_addr or "?")

    return app


def _database_ok(db: Database) -> bool:
    if not db.configured:
        return True
    try:
        return db.execute("SELECT 1") == [(1,)]
    except Exception:
        return False
