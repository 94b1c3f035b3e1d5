"""``GET /health``: what a load balancer and ``salvusctl check`` ask, answered fast."""

from __future__ import annotations

import time

from flask import Blueprint, current_app, jsonify

from web.db import Database
from web.services import services

health = Blueprint("health", __name__)

DATABASE_CHECK_EVERY = 1.0  # seconds; a burst of checks costs one query


@health.get("/health")
def report():
    found = services()
    now = time.monotonic()
    if now - found.health.get("at", 0) > DATABASE_CHECK_EVERY:
        found.health.update(at=now, database=database_ok(found.db))
    manager = found.manager
    workers = manager.pool.live_count() if manager.pool else 0
    ok = found.health["database"] and (workers > 0 or manager.pool is None)
    body = {"status": "ok" if ok else "degraded", "name": found.name, "workers": workers,
            "database": found.health["database"], "sessions": len(manager.sessions),
            "detached": manager.detached_count(), "browsers": len(manager.connections),
            "uptime": round(time.time() - current_app.config["STARTED"], 3)}
    if manager.bus is not None:
        body["bus"] = {"peers": sorted(manager.bus.live_peers()), "lost": manager.bus.lost}
    return jsonify(body), 200 if ok else 503


def database_ok(db: Database) -> bool:
    if not db.configured:
        return True
    try:
        return db.execute("SELECT 1") == [(1,)]
    except Exception:
        return False
