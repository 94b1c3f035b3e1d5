"""The HTTP API's routes: ``POST /api/share``, ``POST /api/execute`` and the
notebooks' ``POST /api/notebook/export``, ``POST /api/notebook/import`` and
``GET /s/<link>.ipynb``.

Blueprints, so that each has request rates of its own (``limit``, called by
``create_app`` with the app's limiter); the work is in web/permalinks.py,
web/api.py and web/notebooks.py.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request
from flask_limiter import Limiter

from web import api, notebooks, permalinks
from web.db import DatabaseUnavailable
from web.pages import stored_blob
from web.replies import json_error, read_json, unavailable
from web.services import services

sharing = Blueprint("sharing", __name__)
computing = Blueprint("computing", __name__)
notebook_files = Blueprint("notebooks", __name__)


def limit(limiter: Limiter) -> None:
    """Requests per IP on both, and from everyone on executions."""
    per_ip = lambda: current_app.config["API_LIMITS"].rate_per_ip  # noqa: E731
    limiter.limit(per_ip)(sharing)
    limiter.limit(per_ip)(computing)
    limiter.limit(per_ip)(notebook_files)
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


@notebook_files.before_request
def notebooks_may_be_larger() -> Response | None:
    """Notebooks with their images outgrow the app's request limit: theirs is
    web/notebooks.py's, and going over it says so in its own words."""
    request.max_content_length = notebooks.MAX_BYTES
    if (request.content_length or 0) > notebooks.MAX_BYTES:
        return json_error(413, f"the upload is {request.content_length / 2**20:.1f} MB; "
                               f"notebooks are at most {notebooks.MAX_BYTES >> 20} MB here: "
                               "clear their outputs in Jupyter first")
    return None


@notebook_files.post("/api/notebook/export")
def export_notebook():
    """The page's cells and outputs (JSON) as an .ipynb or .sage/.py download."""
    try:
        name, mime, text = notebooks.export(
            read_json('{"format": "ipynb", "cells": [{"code": ..., "outputs": [...]}]}'),
            stored_blob)
    except (notebooks.NotebookError, api.ApiError) as err:
        return json_error(err.status, err.message)
    except DatabaseUnavailable:
        return unavailable()
    return Response(text, mimetype=mime, headers={
        "Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})


@notebook_files.post("/api/notebook/import")
def import_notebook():
    """An .ipynb (the body, or a form's ``file``) as the cells it holds (JSON)."""
    # Only a multipart form is parsed as one: curl --data-binary says its body
    # is a urlencoded form, and the notebook must stay the body as it came.
    upload = request.files.get("file") if request.mimetype == "multipart/form-data" else None
    data = upload.read() if upload else request.get_data()
    try:
        return jsonify(notebooks.read(data))
    except notebooks.NotebookError as err:
        return json_error(err.status, err.message)


@notebook_files.get("/s/<link>.ipynb")
def shared_notebook(link: str):
    """A permalink's cells as a notebook: what ``?ipynb=/s/<link>.ipynb`` opens."""
    found = services()
    try:
        content = permalinks.open_link(found.db, link, found.cache) \
            if found.db.configured else None
    except DatabaseUnavailable:
        return unavailable()
    if content is None:
        return json_error(404, f"no shared worksheet {link[:20]!r}; check the link")
    return Response(notebooks.shared(content), mimetype="application/x-ipynb+json", headers={
        "Content-Disposition": f'attachment; filename="{link}.ipynb"',
        "Cache-Control": "no-cache"})
