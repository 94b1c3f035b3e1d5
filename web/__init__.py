"""The Salvus web frontend: ``create_app(config)`` builds the Flask app.

Config keys: NAME, DSN_FILE (database; blobs, health, the browsers table),
WORKERS_FILE (the workers list salvusctl writes), CURVE_KEY (this frontend's
CURVE certificate for the workers and the bus), FRONTENDS_FILE and BUS_BIND
(the bus to the other frontends, web/bus.py; PUBLIC_URL is announced on it),
INSTANCE and HOST (where this frontend is, for the browsers table), QUOTAS
(web.sessions.Quotas), API_LIMITS (web.api.ApiLimits), MEMCACHED,
ALLOWED_ORIGINS (sites that may embed us or call us from a page),
SERVER_NAMES (host names served besides IP addresses and local names),
PROVIDERS_FILE (sign-in providers, web/providers.py), SECRET_FILE (the
appliance's secret: signed cookies, CSRF tokens), ANONYMOUS (computing
without signing in), SECURE_COOKIES (behind TLS), RATE_LIMITS (web.rates:
session starts and executions per account and address), ANONYMOUS_SESSIONS
(sessions one anonymous browser may hold).
Without WORKERS_FILE the app serves pages and health only (unit tests).

The routes are blueprints (pages, health, sharing, computing, notebooks,
websocket) that find what they use in ``app.extensions["salvus"]``
(web/services.py).
``create_app`` starts nothing: ``app.extensions["salvus"].start()`` starts the
frontend's greenlets (web/__main__.py does, when it serves).
"""

from __future__ import annotations

import secrets
import socket
import time
from pathlib import Path

from flask import Flask, request
from flask_limiter import Limiter

from web import api, api_routes, replies, security, services
from web.api_routes import computing, notebook_files, sharing
from web.health import health
from web.pages import pages
from web.proxies import TrustedProxies
from web.rates import RateLimits
from web.services import log
from web.sessions import Quotas
from web.signin import signin
from web.websocket import websocket
from web.worksheet_routes import worksheet_routes

__all__ = ["create_app", "log"]

DEFAULTS = {"NAME": "web", "QUOTAS": Quotas(), "DSN_FILE": None, "API_LIMITS": api.ApiLimits(),
            "MAX_CONTENT_LENGTH": 2 << 20, "MEMCACHED": None, "WORKERS_FILE": None,
            "CURVE_KEY": None, "ALLOWED_ORIGINS": (), "SERVER_NAMES": (),
            "FRONTENDS_FILE": None, "BUS_BIND": None, "PUBLIC_URL": "", "ENTRIES": (),
            "TRUSTED_PROXIES": (), "PROVIDERS_FILE": None, "SECRET_FILE": None,
            "ANONYMOUS": True, "SECURE_COOKIES": False, "ANONYMOUS_SESSIONS": None,
            "RATE_LIMITS": RateLimits(),
            "INSTANCE": "salvus",
            "SOCK_SERVER_OPTIONS": {"ping_interval": 20, "max_message_size": 2 << 20}}


def create_app(config: dict | None = None) -> Flask:
    app = Flask(__name__, static_folder=None)
    app.config.update(DEFAULTS, STARTED=time.time(), HOST=socket.gethostname())
    app.config.update(config or {})
    keep_signed_cookies(app)
    found = services.build(app)
    app.extensions["salvus"] = found
    security.install(app, found.allowed_origins, found.server_names,
                     found.manager.frontends)
    replies.install(app, found.say)
    for blueprint in (pages, health, sharing, computing, notebook_files, websocket, signin,
                      worksheet_routes):
        app.register_blueprint(blueprint)
    limit_rates(app)
    if app.config["TRUSTED_PROXIES"]:
        app.wsgi_app = TrustedProxies(app.wsgi_app, app.config["TRUSTED_PROXIES"])
    return app


def keep_signed_cookies(app: Flask) -> None:
    """Flask's session (a sign-in's state and nonce on their way through the
    provider) is signed with the appliance's secret, which every frontend
    shares: any of them can finish a sign-in another began."""
    secret = app.config["SECRET_FILE"]
    app.secret_key = Path(secret).read_text().strip() if secret else secrets.token_hex(32)
    app.config.update(SESSION_COOKIE_NAME="salvus_oauth", SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Lax",
                      SESSION_COOKIE_SECURE=app.config["SECURE_COOKIES"],
                      PERMANENT_SESSION_LIFETIME=600)


def limit_rates(app: Flask) -> Limiter:
    """Request rates per IP and in all, shared by every frontend through
    memcached; without memcached (or while it is gone) each frontend counts
    on its own, and never fails a request because counting failed."""
    address = app.config["MEMCACHED"]
    limiter = Limiter(lambda: request.remote_addr or "?", app=app,
                      storage_uri=f"memcached://{address}" if address else "memory://",
                      storage_options={"connect_timeout": 0.2, "timeout": 0.2}
                      if address else {},
                      strategy="fixed-window", swallow_errors=True,
                      in_memory_fallback_enabled=True, headers_enabled=True,
                      retry_after="delta-seconds")
    api_routes.limit(limiter)
    return limiter
