"""The HTTP API's routes: ``POST /api/share`` and ``POST /api/execute``.

Two blueprints, so that each has request rates of its own (``limit``, called
by ``create_app`` with the app's limiter); the work is in web/permalinks.py
and web/api.py.
"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request
from flask_limiter import Limiter

from web import api, permalinks
from web.db import DatabaseUnavailable
from web.replies import json_error, read_json, unavailable
from web.services import services

sharing = Blueprint("sharing", __name__)
computing = Blueprint("computing", __name__)


def limit(limiter: Limiter) -> None:
    """Requests per IP on both, and from everyone on executions."""
    per_ip = lambda: current_app.config["API_LIMITS"].rate_per_ip  # noqa: E731
    limiter.limit(per_ip)(sharing)
    limiter.limit(per_ip)(computing)
    limiter.limit(lambda: current_app.config["API_LIMITS"].rate_total,
                  key_func=lambda: "everyone")(computing)


@sharing.post("/api/share")
def share():
    try:
        content = permalinks.normalize(read_json('{"cells": [{"code": ...}]}'))
        link = permalinks.store(services().db, content)
    except (permalinks.ShareError, api.ApiError) as err:
        return json_error(err.status, err.message)
    except DatabaseUnavailable:
        return unavailable()
    return jsonify(id=link, url=f"/s/{link}")


@computing.post("/api/execute")
def execute():
    limits = current_app.config["API_LIMITS"]
    found = services()
    try:
        body = read_json('{"code": ...}') if request.is_json else request.form.to_dict()
        if not isinstance(body, dict):
            raise api.ApiError(400, "send JSON ({\"code\": ...}) or a form with 'code'")
        code, engine, timeout = api.parse(body, limits)
        with found.slots.take(request.remote_addr or "?", limits):
            return jsonify(api.execute(found.manager, code, engine, timeout, limits))
    except api.ApiError as err:
        return json_error(err.status, err.message, err.retry_after)
