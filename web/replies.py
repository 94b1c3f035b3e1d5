"""JSON replies shared by the routes: errors that name the problem and the fix."""

from __future__ import annotations

import json
import traceback

from flask import Flask, Response, jsonify, request
from flask_limiter.errors import RateLimitExceeded
from werkzeug.exceptions import HTTPException

from web import assets
from web.api import ApiError


def json_error(status: int, message: str, retry_after: int | None = None) -> Response:
    response = jsonify(error=message)
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def unavailable() -> Response:
    return json_error(503, "the database is unavailable right now; try again in a moment", 5)


def read_json(example: str):
    """The request's JSON body; anything else is a 400 naming the problem."""
    try:
        return json.loads(request.get_data(cache=True) or b"null")
    except RecursionError:
        raise ApiError(400, f"the JSON body is nested too deeply; send {example}") from None
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, f"the body is not valid JSON; send {example}") from None


def install(app: Flask, say) -> None:
    """Errors as one line each: JSON for the API (and for a body too large),
    the page's own error pages elsewhere; an unexpected one is logged."""

    @app.errorhandler(RateLimitExceeded)
    def rate_limited(error: RateLimitExceeded) -> Response:
        return json_error(429, f"too many requests ({error.description} per address or "
                               "in all); wait a little", 60)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        if request.path.startswith("/api/") or error.code == 413:
            limit = request.max_content_length  # a route may allow more (notebooks do)
            text = {413: f"request body over {limit} bytes; send less"}.get(
                error.code, f"{error.name}: {error.description}")
            return json_error(error.code or 400, text)
        if error.code == 404 and "notfound.html" in assets.current().assets:
            # A page of ours that says where to go, not Flask's.
            return assets.page_response(request, "notfound.html", status=404)
        return error

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Response:
        where = traceback.extract_tb(error.__traceback__)[-1]
        say(f"{request.method} {request.path}: {error!r} at {where.filename}:{where.lineno}")
        return json_error(500, "an internal error; it was logged")
