"""The app factory on its own: create_app(config) with Flask's test client,
no workers, no database. The same routes are exercised against real
frontends in test_web and test_browser; these pin down the wiring."""

from __future__ import annotations

import pytest

from web import create_app
from web.api import ApiLimits
from web.services import Services

pytestmark = pytest.mark.filterwarnings(
    # Flask-Limiter warns that memory:// is not for production; here it is the point.
    "ignore:Using the in-memory storage:UserWarning")


@pytest.fixture
def app():
    return create_app({"NAME": "web-under-test",
                       "API_LIMITS": ApiLimits(rate_per_ip="2/minute", rate_total="3/minute")})


def test_each_route_belongs_to_a_blueprint_that_finds_its_services_in_the_app(app):
    endpoints = {(rule.rule, rule.endpoint) for rule in app.url_map.iter_rules()}
    sheet = "/api/worksheets/<sheet:sheet>"
    assert endpoints == {
        ("/", "pages.index"), ("/s/<link>", "pages.shared"), ("/s", "pages.shared_in_url"),
        ("/favicon.ico", "pages.favicon"), ("/static/<path:name>", "pages.static_file"),
        ("/blobs/<sha1>", "pages.blob"), ("/health", "health.report"),
        ("/api/share", "sharing.share"), ("/api/execute", "computing.execute"),
        ("/api/notebook/export", "notebooks.export_notebook"),
        ("/api/notebook/import", "notebooks.import_notebook"),
        ("/s/<link>.ipynb", "notebooks.shared_notebook"),
        ("/ws", "websocket.browser_socket"),
        ("/signin", "signin.choose"), ("/signin/<provider>", "signin.begin"),
        ("/signin/<provider>/back", "signin.back"), ("/signout", "signin.sign_out"),
        ("/api/me", "signin.me"), ("/worksheets", "worksheets.listing_page"),
        ("/w/<sheet:sheet>", "worksheets.worksheet_page"),
        ("/api/worksheets", "worksheets.listing"), ("/api/worksheets", "worksheets.create"),
        (sheet, "worksheets.opened"), (f"{sheet}/versions", "worksheets.save"),
        (f"{sheet}/versions", "worksheets.versions"),
        (f"{sheet}/versions/<int:version>", "worksheets.version"),
        (f"{sheet}/versions/<int:version>/share", "worksheets.share"),
        (f"{sheet}/rename", "worksheets.rename"), (f"{sheet}/copy", "worksheets.copy"),
        (f"{sheet}/delete", "worksheets.delete"), (f"{sheet}/restore", "worksheets.restore")}
    assert isinstance(app.extensions["salvus"], Services)
    health = app.test_client().get("/health").get_json()
    assert health["name"] == "web-under-test" and health["status"] == "ok"


def test_two_apps_in_one_process_keep_their_own_services():
    first, second = create_app({"NAME": "one"}), create_app({"NAME": "two"})
    assert first.extensions["salvus"] is not second.extensions["salvus"]
    assert first.test_client().get("/health").get_json()["name"] == "one"
    assert second.test_client().get("/health").get_json()["name"] == "two"


def test_sharing_and_computing_count_their_rates_apart(app):
    client = app.test_client()
    shares = [client.post("/api/share", json={"cells": []}).status_code for _ in range(3)]
    assert shares[2] == 429 and 429 not in shares[:2]
    refused = client.post("/api/share", json={"cells": []})
    assert refused.get_json()["error"].startswith("too many requests")
    assert int(refused.headers["Retry-After"]) > 0
    # Executions have their own count: the shares used none of it. (No
    # workers here: the first two get as far as finding none.)
    executions = [client.post("/api/execute", json={"code": "1"}).status_code
                  for _ in range(3)]
    assert executions[:2] != [429, 429] and executions[2] == 429


def test_the_limit_on_everyone_counts_every_address(app):
    codes = [app.test_client().post("/api/execute", json={"code": "1"},
                                    environ_base={"REMOTE_ADDR": f"10.0.0.{i}"}).status_code
             for i in range(4)]
    assert 429 not in codes[:3] and codes[3] == 429


def test_api_errors_are_one_line_of_json_and_pages_are_refused_to_other_names(app):
    client = app.test_client()
    wrong_method = client.get("/api/execute")
    assert wrong_method.status_code == 405
    assert wrong_method.get_json()["error"].startswith("Method Not Allowed")
    too_big = client.post("/api/execute", data=b"x" * (3 << 20))
    assert too_big.status_code == 413 and "send less" in too_big.get_json()["error"]
    other_name = client.get("/", headers={"Host": "rebound.example"})
    assert other_name.status_code == 421 and "server_names" in other_name.get_json()["error"]
    cross_site = client.post("/api/share", json={"cells": []},
                             headers={"Origin": "https://elsewhere.example"})
    assert cross_site.status_code == 403 and "other sites" in cross_site.get_json()["error"]


def test_every_response_carries_the_security_headers(app):
    with app.test_client().get("/") as response:  # a file response: closed after
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        assert response.headers["X-Frame-Options"] == "DENY"
        assert "salvus_browser=" in response.headers["Set-Cookie"]
        assert "HttpOnly" in response.headers["Set-Cookie"]


def test_an_unknown_page_gets_our_404_and_an_unknown_api_path_json(app):
    with app.test_client().get("/no/such/page") as page:
        assert page.status_code == 404 and b"No such page" in page.data
    api_path = app.test_client().get("/api/no-such-thing")
    assert api_path.status_code == 404 and api_path.get_json()["error"].startswith("Not Found")


def test_behind_a_trusted_proxy_the_browser_s_address_counts_and_no_one_else_s():
    seen = []
    app = create_app({"NAME": "behind", "TRUSTED_PROXIES": ("127.0.0.1",)})

    @app.get("/whoami")
    def whoami():
        from flask import request
        seen.append((request.remote_addr, request.scheme))
        return ""

    client = app.test_client()
    headers = {"X-Forwarded-For": "6.6.6.6, 203.0.113.9", "X-Forwarded-Proto": "https"}
    client.get("/whoami", headers=headers, environ_base={"REMOTE_ADDR": "127.0.0.1"})
    client.get("/whoami", headers=headers, environ_base={"REMOTE_ADDR": "198.51.100.7"})
    # The proxy's own appended address, never what a client wrote before it;
    # from anyone but the proxy, the headers are ignored.
    assert seen == [("203.0.113.9", "https"), ("198.51.100.7", "http")]
