"""Rate limits on session starts and executions, per account and per address:
they trigger, say when to try again, and release. A real frontend and worker,
with tight limits (web/rates.py)."""

from __future__ import annotations

import time

import pytest

from tests.accounts_client import signed_in, start_signin_stack
from tests.helpers import wait_for
from tests.web_client import Browserish

# Browsers from elsewhere come through a proxy that names them (this host's
# own addresses are not limited by address).
AWAY = {"X-Forwarded-For": "203.0.113.7"}


@pytest.fixture(scope="module")
def tight(migrated_db):
    """A frontend whose anonymous pages may run 3 cells a minute and start 2
    sessions from one address, a signed-in account 5 cells every 5 seconds;
    loopback is its trusted proxy."""
    with start_signin_stack(migrated_db,
                            "--rate-anonymous-executions", "3/minute",
                            "--rate-anonymous-starts", "2/minute",
                            "--rate-executions", "5/5 second",
                            "--trusted-proxies", "127.0.0.1",
                            "--anonymous-sessions", "1") as stack:
        yield stack


def test_executions_are_limited_with_retry_after_then_released(tight):
    web, provider, _ = tight
    provider.person = {"sub": "rita", "email": "rita@example.org", "name": "Rita"}
    client = signed_in(web)
    page = Browserish(web, "browser=rita; salvus_signin=" + client.cookies["salvus_signin"])
    try:
        page.open()
        for n in range(5):
            assert page.run(f"c{n}", f"{n}+1")[-1]["status"] == "ok"
        page.send(type="execute", cell="c5", code="1")
        refused = page.receive()
        assert refused["type"] == "protocol_error" and refused["code"] == "rate_limited"
        assert refused["cell"] == "c5"
        assert "too many cells run from this account (the limit is 5/5 second)" in \
            refused["message"]
        assert 1 <= refused["retry_after"] <= 5
        # Released once the window has passed: wait as long as it said.
        deadline = time.monotonic() + 20
        while True:
            page.send(type="execute", cell="c6", code="6*7")
            answer = page.receive()
            if answer.get("code") != "rate_limited":
                break
            assert time.monotonic() < deadline, "the limit never released"
            time.sleep(answer["retry_after"])
        page.backlog.insert(0, answer)
        assert page.until_done("c6")[-1]["status"] == "ok"
    finally:
        page.close()


def test_anonymous_pages_get_the_tighter_limits_by_address(tight):
    web, _, _ = tight
    page = Browserish(web, "browser=anon-1", AWAY)
    try:
        page.open()
        for n in range(3):
            assert page.run(f"a{n}", "1")[-1]["status"] == "ok"
        page.send(type="execute", cell="a3", code="1")
        refused = page.receive()
        assert refused["code"] == "rate_limited" and "from your address" in refused["message"]
        assert "3/minute" in refused["message"] and refused["retry_after"] >= 1
    finally:
        page.close()
    # Session starts: two a minute from this address (the first page was one).
    second = Browserish(web, "browser=anon-2", AWAY)
    third = Browserish(web, "browser=anon-3", AWAY)
    try:
        assert second.open()["type"] == "attached"
        refused = third.open()
        assert refused["type"] == "protocol_error" and refused["code"] == "rate_limited"
        assert "too many sessions started from your address" in refused["message"]
    finally:
        second.close()
        third.close()
    # This host's own scripts are not limited by address.
    local = Browserish(web, "browser=local-script")
    try:
        local.open()
        for n in range(6):
            assert local.run(f"l{n}", "1")[-1]["status"] == "ok"
    finally:
        local.close()


def test_an_anonymous_browser_holds_fewer_sessions(tight):
    web, provider, _ = tight
    first = Browserish(web, "browser=anon-tabs")
    second = Browserish(web, "browser=anon-tabs")
    try:
        assert first.open()["type"] == "attached"
        refused = second.open()
        assert refused["code"] == "quota" and "(the limit is 1)" in refused["message"]
    finally:
        first.close()
        second.close()
    # Signed in, the same browser may hold more.
    provider.person = {"sub": "tabs", "email": "t@example.org", "name": "Tabs"}
    token = signed_in(web).cookies["salvus_signin"]
    tabs = [Browserish(web, f"browser=anon-tabs; salvus_signin={token}") for _ in range(2)]
    try:
        assert all(tab.open()["type"] == "attached" for tab in tabs)
    finally:
        for tab in tabs:
            tab.close()


def test_frontends_count_together_in_memcached_and_alone_without_it(make_folder):
    """Two frontends' Rates share one count through a real memcached; with it
    gone each counts on its own rather than let everything through."""
    import shutil
    import subprocess

    from web import wire
    from web.rates import RateLimits, Rates

    sock = make_folder() / "memcached.sock"
    server = subprocess.Popen([shutil.which("memcached"), "-s", str(sock), "-u", "root"],
                              stdin=subprocess.DEVNULL)
    try:
        wait_for(sock.exists, what="memcached's socket")
        limits = RateLimits(executions="4/minute")
        one, two = Rates(limits, str(sock)), Rates(limits, str(sock))
        for rates in (one, two, one, two):
            rates.check("executions", "shared", "127.0.0.1")
        with pytest.raises(wire.WireError, match="the limit is 4/minute"):
            two.check("executions", "shared", "127.0.0.1")
        one.close()
        two.close()
    finally:
        server.terminate()
        server.wait(10)
    alone = Rates(RateLimits(executions="2/minute"), str(sock))
    try:
        alone.check("executions", "away", "127.0.0.1")
        alone.check("executions", "away", "127.0.0.1")
        with pytest.raises(wire.WireError):
            alone.check("executions", "away", "127.0.0.1")
    finally:
        alone.close()
