"""The HTTP side of saved worksheets (web/worksheets.py): pages and JSON.

    GET  /worksheets                              the account's list (a page)
    GET  /w/<id>[?version=N]                      a worksheet (the page, its cells in it)
    GET  /api/worksheets                          [{"id", "title", "versions", "updated_at"}]
    POST /api/worksheets                          {"title"?, "content"?} -> {"id", "version"}
    GET  /api/worksheets/<id>                     {"id", "title", "version", "content"}
    POST /api/worksheets/<id>/versions            {"content"} -> {"version", "saved"}
    GET  /api/worksheets/<id>/versions            [{"version", "saved_at", "cells", ...}]
    GET  /api/worksheets/<id>/versions/<n>        {"version", "content"}
    POST /api/worksheets/<id>/versions/<n>/share  {"url"}: a permalink of that version
    POST /api/worksheets/<id>/rename              {"title"}
    POST /api/worksheets/<id>/copy                -> {"id"}
    POST /api/worksheets/<id>/delete
    POST /api/worksheets/<id>/restore             {"version"} -> {"version"}

Everything needs a live sign-in (401 otherwise; the pages go to /signin),
and every POST the sign-in's CSRF token too (web/signin.py).
"""

from __future__ import annotations

import html

from flask import Blueprint, Response, g, jsonify, redirect, request
from werkzeug.routing import BaseConverter

from web import assets, permalinks
from web.api import ApiError
from web.db import DatabaseUnavailable
from web.replies import json_error, read_json, unavailable
from web.services import services
from web.signin import csrf_refusal, current_account
from web.worksheets import UNTITLED, WorksheetError, content, title_of

worksheet_routes = Blueprint("worksheets", __name__)


class SheetId(BaseConverter):
    regex = r"w[A-Za-z0-9_-]{8,24}"


@worksheet_routes.record_once
def _converter(state) -> None:
    state.app.url_map.converters["sheet"] = SheetId


@worksheet_routes.before_request
def need_account() -> Response | None:
    page = not request.path.startswith("/api/")
    try:
        g.account = current_account()
    except DatabaseUnavailable:
        return unavailable()
    if g.account is None:
        if page:
            return redirect(f"/signin?next={request.full_path.rstrip('?')}")
        return json_error(401, "sign in first, at /signin: worksheets belong to accounts")
    if request.method == "POST":
        return csrf_refusal()
    return None


@worksheet_routes.errorhandler(WorksheetError)
def refused(err: WorksheetError) -> Response:
    return json_error(err.status, err.message)


@worksheet_routes.errorhandler(DatabaseUnavailable)
def database_away(_: DatabaseUnavailable) -> Response:
    return unavailable()


def store():
    return services().worksheets


def _body(example: str) -> dict:
    try:
        body = read_json(example)
    except ApiError as err:
        raise WorksheetError(err.status, err.message) from None
    if not isinstance(body, dict):
        raise WorksheetError(400, f"send {example}")
    return body


# ------------------------------------------------------------------ pages


@worksheet_routes.get("/worksheets")
def listing_page() -> Response:
    rows = "".join(
        f'<tr data-id="{s.id}"><td><a href="/w/{s.id}">{html.escape(s.title)}</a></td>'
        f"<td>{s.head}</td><td>{s.updated_at} UTC</td><td class=\"actions\"></td></tr>"
        for s in store().listing(g.account.id))
    empty = "" if rows else '<p class="empty">No worksheets yet: open <a href="/">a new one</a>' \
                            " and it is saved here as you work.</p>"
    body = (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>Your worksheets · Salvus</title>'
            f'<link rel="stylesheet" href="/static/app.css"></head>'
            f'<body class="worksheets"><main><h1>Your worksheets</h1>'
            f'<p><a href="/">New worksheet</a> · signed in as '
            f"{html.escape(g.account.name or g.account.email)}</p>{empty}"
            f'<table id="sheets"><thead><tr><th>Title</th><th>Versions</th><th>Saved</th>'
            f"<th></th></tr></thead><tbody>{rows}</tbody></table>"
            f'<section id="history" hidden></section></main>'
            f'<script src="/static/worksheets.js"></script></body></html>')
    response = Response(body, mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"
    return response


@worksheet_routes.get("/w/<sheet:sheet>")
def worksheet_page(sheet: str) -> Response:
    version = request.args.get("version", type=int)
    try:
        summary, number, value = store().open(g.account.id, sheet, version)
    except WorksheetError:
        return assets.page_response(request, "missing.html", status=404)
    saved = {"id": summary.id, "title": summary.title, "version": number,
             "head": summary.head, "content": value}
    response = assets.page_response(request, "index.html", insert=(
        '<script id="worksheet" type="application/json">'
        f"{permalinks.embeddable_json(saved)}</script>"))
    response.headers["Cache-Control"] = "no-store"
    return response


# ------------------------------------------------------------------ JSON


@worksheet_routes.get("/api/worksheets")
def listing() -> Response:
    return jsonify([s.to_json() for s in store().listing(g.account.id)])


@worksheet_routes.post("/api/worksheets")
def create() -> Response:
    body = _body('{"title": ..., "content": {"language": ..., "cells": [...]}}')
    title = title_of(body["title"]) if "title" in body else UNTITLED
    value = content(body["content"]) if "content" in body else None
    sheet, head = store().create(g.account.id, title, value)
    return jsonify(id=sheet, version=head, url=f"/w/{sheet}"), 201


@worksheet_routes.get("/api/worksheets/<sheet:sheet>")
def opened(sheet: str) -> Response:
    summary, number, value = store().open(g.account.id, sheet)
    return jsonify(id=summary.id, title=summary.title, version=number, content=value)


@worksheet_routes.post("/api/worksheets/<sheet:sheet>/versions")
def save(sheet: str) -> Response:
    body = _body('{"content": {"language": ..., "cells": [...]}}')
    head, saved = store().save(g.account.id, sheet, content(body.get("content")))
    return jsonify(version=head, saved=saved)


@worksheet_routes.get("/api/worksheets/<sheet:sheet>/versions")
def versions(sheet: str) -> Response:
    return jsonify(store().versions(g.account.id, sheet))


@worksheet_routes.get("/api/worksheets/<sheet:sheet>/versions/<int:version>")
def version(sheet: str, version: int) -> Response:
    _, number, value = store().open(g.account.id, sheet, version)
    return jsonify(version=number, content=value)


@worksheet_routes.post("/api/worksheets/<sheet:sheet>/versions/<int:version>/share")
def share(sheet: str, version: int) -> Response:
    _, _, value = store().open(g.account.id, sheet, version)
    cells = [{"code": ("%md\n" + c["code"]) if c["type"] == "markdown" else c["code"]}
             for c in value["cells"]]
    try:
        link = permalinks.store(services().db, permalinks.normalize(
            {"engine": value.get("language"), "cells": cells}))
    except permalinks.ShareError as err:
        raise WorksheetError(err.status, err.message) from None
    return jsonify(url=f"/s/{link}")


@worksheet_routes.post("/api/worksheets/<sheet:sheet>/rename")
def rename(sheet: str) -> Response:
    store().rename(g.account.id, sheet, title_of(_body('{"title": ...}').get("title")))
    return jsonify(renamed=True)


@worksheet_routes.post("/api/worksheets/<sheet:sheet>/copy")
def copy(sheet: str) -> Response:
    copied = store().copy(g.account.id, sheet)
    return jsonify(id=copied, url=f"/w/{copied}"), 201


@worksheet_routes.post("/api/worksheets/<sheet:sheet>/delete")
def delete(sheet: str) -> Response:
    store().delete(g.account.id, sheet)
    return jsonify(deleted=True)


@worksheet_routes.post("/api/worksheets/<sheet:sheet>/restore")
def restore(sheet: str) -> Response:
    chosen = _body('{"version": N}').get("version")
    if type(chosen) is not int or chosen < 1:
        raise WorksheetError(400, 'send {"version": N}, a version number')
    return jsonify(version=store().restore(g.account.id, sheet, chosen))
