"""Signing in for real: a frontend process, a worker, PostgreSQL, and a local
OpenID Connect / OAuth 2 provider (tests/oidc_provider.py); the redirect
dance in Chromium, and the ways it must refuse."""

from __future__ import annotations

import json

import psycopg2
import requests
from playwright.sync_api import expect

from tests.accounts_client import me, session, signed_in, start_signin_stack
from tests.oidc_provider import CLIENT_SECRET, Provider
from tests.test_browser import ARTIFACTS, result, run_cell, wait_ready
from tests.web_client import handshake


def test_the_whole_dance_in_chromium_then_sign_out(signin_stack, chromium, request):
    web, provider, _ = signin_stack
    provider.person = {"sub": "carol-7", "email": "carol@example.org", "name": "Carol"}
    context = chromium.new_context()
    page = context.new_page()
    page.set_default_timeout(30000)
    try:
        page.goto(f"{web.url}/")
        wait_ready(page)
        expect(page.locator("#account")).to_contain_text("Sign in")
        page.locator("#account a").click()
        page.get_by_text("Sign in with Campus").click()
        page.wait_for_url(f"{web.url}/")
        wait_ready(page)
        expect(page.locator("#account")).to_contain_text("Carol")
        cookies = {c["name"]: c for c in context.cookies()}
        assert cookies["salvus_signin"]["httpOnly"] is True
        assert cookies["salvus_signin"]["sameSite"] == "Lax"
        run_cell(page, "1+1", 0)
        expect(result(page, 0)).to_have_attribute("data-plain", "2")
        token = cookies["salvus_signin"]["value"]
        page.locator("#signout").click()
        expect(page.locator("#account")).to_contain_text("Sign in")
        # The old cookie, replayed, signs no one in on any frontend.
        replay = requests.get(f"{web.url}/api/me", cookies={"salvus_signin": token},
                              timeout=10).json()
        assert replay["account"] is None
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / f"{request.node.name}.png")
        context.close()


def test_an_oauth2_provider_without_id_tokens_signs_in_through_its_api(signin_stack):
    web, provider, dsn = signin_stack
    provider.person = {"sub": "dave-2", "email": "dave@example.org", "name": "Dave"}
    client = signed_in(web, "github")
    answer = me(client, web)
    assert answer["account"] == {"name": "Dave", "email": "dave@example.org",
                                 "provider": "github"}
    assert answer["csrf"]
    # The same person again: the same account, one identity.
    signed_in(web, "github")
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM identities WHERE provider = 'github'"
                    " AND email = 'dave@example.org'")
        assert cur.fetchone()[0] == 1
    conn.close()


def test_a_forged_state_is_refused(signin_stack):
    web, _, _ = signin_stack
    client = session()
    # Begin for real (the state waits in the signed cookie), come back with another.
    started = client.get(f"{web.url}/signin/campus", allow_redirects=False, timeout=10)
    assert started.status_code == 302
    back = client.get(f"{web.url}/signin/campus/back?code=whatever&state=forged", timeout=10)
    assert back.status_code == 400 and "the sign-in was refused" in back.text
    assert "salvus_signin" not in client.cookies
    assert me(client, web)["account"] is None


def test_an_id_token_with_another_nonce_or_a_foreign_signature_is_refused(signin_stack):
    web, provider, _ = signin_stack
    for tamper in ("nonce", "signature"):
        provider.tamper = tamper
        try:
            client = session()
            answer = client.get(f"{web.url}/signin/campus", timeout=10)
        finally:
            provider.tamper = None
        assert answer.status_code == 400, answer.text
        assert "the sign-in was refused (ID token:" in answer.text
        assert "salvus_signin" not in client.cookies
        assert me(client, web)["account"] is None


def test_a_tampered_cookie_is_refused_and_cleared(signin_stack):
    web, _, _ = signin_stack
    client = signed_in(web)
    token = client.cookies["salvus_signin"]
    forged = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    answer = requests.get(f"{web.url}/api/me", cookies={"salvus_signin": forged}, timeout=10)
    assert answer.json()["account"] is None
    assert "salvus_signin=;" in answer.headers["Set-Cookie"]
    # The websocket refuses a sign-in cookie that is not a live one.
    assert handshake(web.port, {"Cookie": f"salvus_signin={forged}"}) == 401
    assert handshake(web.port, {"Cookie": f"salvus_signin={token}"}) == 101


def test_state_changes_need_the_csrf_token_and_other_sites_are_refused(signin_stack):
    web, _, _ = signin_stack
    client = signed_in(web)
    refused = client.post(f"{web.url}/signout", timeout=10)
    assert refused.status_code == 403 and "CSRF token" in refused.json()["error"]
    assert me(client, web)["account"] is not None
    live = f"salvus_signin={client.cookies['salvus_signin']}"
    assert handshake(web.port, {"Origin": "https://evil.example", "Cookie": live}) == 403
    assert handshake(web.port, {"Origin": web.url, "Cookie": live}) == 101
    token = me(client, web)["csrf"]
    done = client.post(f"{web.url}/signout", headers={"X-CSRF-Token": token}, json={},
                       timeout=10)
    assert done.status_code == 200
    assert me(client, web)["account"] is None


def test_the_client_secret_is_in_no_log_and_on_no_command_line(signin_stack):
    web, _, _ = signin_stack
    signed_in(web)
    with open(f"/proc/{web.proc.pid}/cmdline", "rb") as f:
        assert CLIENT_SECRET.encode() not in f.read()
    assert CLIENT_SECRET not in web.log.read_text()


def test_behind_tls_every_cookie_is_secure(migrated_db, make_folder):
    """The app factory with SECURE_COOKIES (salvusctl sets it when haproxy is
    in front): the redirect's state cookie and the sign-in cookie."""
    from web import create_app

    folder = make_folder()
    with Provider() as provider:
        (folder / "providers.json").write_text(json.dumps(provider.entries()))
        (folder / "dsn").write_text(migrated_db)
        app = create_app({"PROVIDERS_FILE": str(folder / "providers.json"),
                          "DSN_FILE": str(folder / "dsn"), "SECURE_COOKIES": True})
        client = app.test_client()
        begun = client.get("/signin/campus", base_url="https://localhost")
        assert begun.status_code == 302
        assert "Secure" in begun.headers["Set-Cookie"] and "salvus_oauth=" in \
            begun.headers["Set-Cookie"]
        at_provider = requests.get(begun.headers["Location"], allow_redirects=False, timeout=10)
        back = at_provider.headers["Location"]
        assert back.startswith("https://localhost/signin/campus/back?")
        done = client.get(back.removeprefix("https://localhost"), base_url="https://localhost")
        assert done.status_code == 302, done.text
        cookie = next(c for c in done.headers.getlist("Set-Cookie")
                      if c.startswith("salvus_signin="))
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_a_second_provider_links_to_the_same_account(signin_stack):
    web, provider, dsn = signin_stack
    provider.person = {"sub": "lina-1", "email": "lina@example.org", "name": "Lina"}
    client = signed_in(web, "campus")
    first = me(client, web)["account"]
    provider.person = {"sub": "lina-gh", "email": "lina@example.org", "name": "Lina L"}
    linked = client.get(f"{web.url}/signin/github?next=/", timeout=10)
    assert linked.status_code == 200
    now = me(client, web)["account"]
    assert now["provider"] == "github" and now["name"] == first["name"] == "Lina"
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(DISTINCT account), count(*) FROM identities"
                    " WHERE email = 'lina@example.org'")
        assert cur.fetchone() == (1, 2)
    conn.close()
    # An identity of someone else's account is not taken over by linking.
    provider.person = {"sub": "other-9", "email": "o@example.org", "name": "Other"}
    signed_in(web, "github")
    provider.person = {"sub": "lina-3", "email": "lina@example.org", "name": "Lina"}
    other = signed_in(web, "campus")
    provider.person = {"sub": "other-9", "email": "o@example.org", "name": "Other"}
    refused = other.get(f"{web.url}/signin/github", timeout=10)
    assert refused.status_code == 409 and "signs in to another account" in refused.text


def test_without_anonymous_use_everyone_signs_in_first(migrated_db, chromium, request):
    with start_signin_stack(migrated_db, "--no-anonymous") as (web, provider, _):
        assert handshake(web.port, {}) == 401
        assert requests.get(f"{web.url}/api/me", timeout=10).json()["anonymous"] is False
        provider.person = {"sub": "nora", "email": "nora@example.org", "name": "Nora"}
        context = chromium.new_context()
        page = context.new_page()
        page.set_default_timeout(30000)
        try:
            page.goto(f"{web.url}/")
            page.wait_for_url(f"{web.url}/signin?next=%2F")
            expect(page.get_by_text("Go on without signing in")).to_have_count(0)
            page.get_by_text("Sign in with Campus").click()
            page.wait_for_url(f"{web.url}/")
            wait_ready(page)
            run_cell(page, "2**10", 0)
            expect(result(page, 0)).to_have_attribute("data-plain", "1024")
        finally:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=ARTIFACTS / f"{request.node.name}.png")
            context.close()
