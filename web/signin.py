"""Signing in and out, and who is signed in.

    GET  /signin                    the providers to choose from
    GET  /signin/<provider>         redirect to the provider (state, nonce)
    GET  /signin/<provider>/back    the provider's redirect back: check, sign in
    POST /signout                   end this browser's sign-in (CSRF token)
    GET  /api/me                    {"account": {...} | null, "csrf": ..., ...}

The redirect's state and nonce wait in Flask's signed session cookie
(``salvus_oauth``, signed with the appliance's secret, so any frontend can
finish what another began). The sign-in itself is ``salvus_signin``: a random
token (web/accounts.py), HttpOnly, SameSite=Lax (the provider's redirect back
is a top-level navigation), Secure behind TLS.
"""

from __future__ import annotations

import contextlib
import html
from urllib.parse import urlsplit

from flask import Blueprint, Response, jsonify, redirect, request, session, url_for

from web import providers
from web.accounts import Account, LinkRefused
from web.db import DatabaseUnavailable
from web.replies import json_error, unavailable
from web.services import services

COOKIE = "salvus_signin"
CSRF_HEADER = "X-CSRF-Token"

signin = Blueprint("signin", __name__)


def cookie_token() -> str | None:
    return request.cookies.get(COOKIE)


def current_account() -> Account | None:
    """Who this request's sign-in cookie says (None: not signed in, or the
    cookie is not a live sign-in). Raises DatabaseUnavailable."""
    found = services()
    token = cookie_token()
    if not token or found.accounts is None:
        return None
    return found.accounts.account(token)


def csrf_refusal() -> Response | None:
    """A state-changing request of a signed-in browser must carry the CSRF
    token of its sign-in (header or form field); None when it does."""
    token = cookie_token()
    given = request.headers.get(CSRF_HEADER) or request.form.get("csrf")
    if token and services().accounts.csrf_ok(token, given):
        return None
    return json_error(403, "this request lacks the page's CSRF token; reload the page "
                           "and try again")


@signin.before_app_request
def websocket_needs_a_live_signin() -> Response | None:
    """The websocket runs code: it opens only for a live sign-in, or for
    anyone where the admin allows anonymous use. A sign-in cookie that is not
    a live one (made up, tampered, ended) is refused, not ignored. (Its
    origin is checked before this: web/security.py.)"""
    if request.path != "/ws":
        return None
    found = services()
    try:
        account = current_account()
    except DatabaseUnavailable:
        return unavailable()
    if cookie_token() and account is None:
        return json_error(401, "this browser's sign-in is not valid (ended, expired or "
                               "altered); sign in again at /signin")
    if account is None and not found.anonymous:
        return json_error(401, "sign in first, at /signin: this appliance computes for "
                               "signed-in accounts only")
    request.environ["salvus.account"] = account
    return None


def _local_path(target: str | None) -> str:
    """Where to go after signing in: a path of ours, never another site."""
    if not target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


@signin.get("/signin")
def choose() -> Response:
    found = services()
    nxt = _local_path(request.args.get("next"))
    items = "".join(
        f'<li><a class="provider" href="{url_for("signin.begin", provider=name, next=nxt)}">'
        f"Sign in with {html.escape(p.title)}</a></li>" for name, p in found.providers.items())
    if not items:
        items = "<li>No sign-in provider is set up; the admin names them in [accounts].</li>"
    anonymous = '<p><a href="/">Go on without signing in</a></p>' if found.anonymous else ""
    body = (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>Sign in · Salvus</title><link rel="stylesheet" href="/static/app.css">'
            f"</head><body class=\"signin\">"
            f"<main><h1>Sign in to Salvus</h1><p>Your worksheets are saved, with their "
            f"history, in your account.</p><ul>{items}</ul>{anonymous}</main></body></html>")
    return Response(body, mimetype="text/html")


@signin.get("/signin/<provider>")
def begin(provider: str):
    found = services()
    if provider not in found.providers:
        return json_error(404, f"no sign-in provider {provider!r}; choose one at /signin")
    session["next"] = _local_path(request.args.get("next"))
    client = found.oauth.create_client(provider)
    back = url_for("signin.back", provider=provider, _external=True)
    try:
        return client.authorize_redirect(back)
    except Exception as exc:  # the provider's discovery document, over the network
        found.say(f"sign-in with {provider} could not start: {exc!r}")
        return _failed(502, f"{found.providers[provider].title} does not answer right now; "
                            "try again in a moment")


@signin.get("/signin/<provider>/back")
def back(provider: str):
    found = services()
    chosen = found.providers.get(provider)
    if chosen is None:
        return json_error(404, f"no sign-in provider {provider!r}; choose one at /signin")
    try:
        identity = providers.identity(found.oauth, chosen)
    except providers.Refused as exc:
        found.say(f"a sign-in with {provider} was refused: {exc.error}")
        return _failed(400, f"the sign-in was refused ({exc.error}); start again from "
                            "the sign-in page")
    except providers.ProviderError as exc:
        return _failed(400, f"{exc}; start again from the sign-in page")
    except Exception as exc:
        found.say(f"a sign-in with {provider} failed: {exc!r}")
        return _failed(502, f"{chosen.title} could not be reached to finish the sign-in; "
                            "try again in a moment")
    try:
        already = current_account()
        token, account = found.accounts.sign_in(identity, already.id if already else None)
    except DatabaseUnavailable:
        return unavailable()
    except LinkRefused as exc:
        return _failed(409, str(exc))
    found.say(f"account {account.id} signed in with {provider}")
    response = redirect(session.pop("next", "/"))
    if already is not None:
        with contextlib.suppress(DatabaseUnavailable):  # it expires by itself otherwise
            found.accounts.sign_out(cookie_token())  # replaced by the new sign-in
    response.set_cookie(COOKIE, token, httponly=True, samesite="Lax",
                        secure=found.secure_cookies, max_age=30 * 86400)
    return response


def _failed(status: int, message: str) -> Response:
    body = (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<title>Sign-in failed · Salvus</title><link rel="stylesheet" href="/static/app.css">'
            f'</head><body class="signin"><main>'
            f'<h1>Sign-in failed</h1><p class="error">{html.escape(message)}</p>'
            f'<p><a href="/signin">Sign in again</a></p></main></body></html>')
    return Response(body, status=status, mimetype="text/html")


@signin.post("/signout")
def sign_out():
    token = cookie_token()
    if token:
        refused = csrf_refusal()
        if refused is not None:
            return refused
        try:
            services().accounts.sign_out(token)
        except DatabaseUnavailable:
            return unavailable()
    response = jsonify(signed_out=True) if request.is_json else redirect("/")
    response.delete_cookie(COOKIE, httponly=True, samesite="Lax",
                           secure=services().secure_cookies)
    return response


@signin.get("/api/me")
def me():
    found = services()
    token = cookie_token()
    try:
        account = current_account()
    except DatabaseUnavailable:
        return unavailable()
    body = {"anonymous": found.anonymous,
            "providers": [{"name": n, "title": p.title} for n, p in found.providers.items()],
            "account": None, "csrf": None}
    if account is not None:
        body["account"] = {"name": account.name, "email": account.email,
                           "provider": account.provider}
        body["csrf"] = found.accounts.csrf_token(token)
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    if token and account is None:
        # A cookie that is no live sign-in (ended, expired, or made up).
        response.delete_cookie(COOKIE, httponly=True, samesite="Lax",
                               secure=found.secure_cookies)
    return response
