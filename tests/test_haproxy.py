"""haproxy in front: TLS, the redirect from http, health checks, and pages
that go on when a frontend or a haproxy dies. A real appliance with two
frontends and two haproxies, Debian's haproxy and Chromium."""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import socket
import ssl
import warnings

import pytest

from tests.helpers import run, started_appliance, wait_for
from tests.test_browser import (
    ARTIFACTS,
    expect_every_line_once,
    kill_and_keep_down,
    start_printing,
    wait_ready,
)


@pytest.fixture(scope="module")
def appliance():
    with started_appliance("salvus-tls-", "--web", "2", "--haproxy", "2") as (data, base,
                                                                              started):
        yield data, base, started.stdout


@pytest.fixture
def page(chromium, appliance, request):
    _, base, _ = appliance
    context = chromium.new_context(ignore_https_errors=True)  # our self-signed certificate
    page = context.new_page()
    page.set_default_timeout(30000)
    page.goto(f"https://127.0.0.1:{base + 700}/")
    wait_ready(page)
    yield page
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{request.node.name}.png", full_page=True)
    context.close()


def unverified(maximum: ssl.TLSVersion | None = None, ciphers: str | None = None):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if maximum is not None:
        with warnings.catch_warnings():  # old versions, on purpose: they must be refused
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
            context.maximum_version = maximum
    if ciphers is not None:
        context.set_ciphers(ciphers)
    return context


def handshake(port: int, context: ssl.SSLContext) -> tuple[str, str, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        return tls.version(), tls.cipher()[0], tls.getpeercert(binary_form=True)


def get(port: int, path: str) -> tuple[int, dict, bytes]:
    connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=10,
                                             context=unverified())
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_start_prints_the_https_url_and_the_certificate_s_fingerprint(appliance):
    _, base, said = appliance
    url = f"https://127.0.0.1:{base + 700}/"
    assert f"Salvus is running: open {url}" in said
    printed = re.search(r"SHA-256 fingerprint ([0-9A-F:]{95})", said).group(1)
    _, _, der = handshake(base + 700, unverified())
    served = hashlib.sha256(der).hexdigest().upper()
    assert printed.replace(":", "") == served
    status, _, body = get(base + 700, "/health")
    assert status == 200 and json.loads(body)["status"] == "ok"


def test_plain_http_is_redirected_to_https(appliance):
    _, base, _ = appliance
    for port, door in ((base + 600, base + 700), (base + 601, base + 701)):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.request("GET", "/s/abcdef?run=1", headers={"Host": f"localhost:{port}"})
            response = connection.getresponse()
            assert response.status == 301
            assert response.getheader("Location") == f"https://localhost:{door}/s/abcdef?run=1"
        finally:
            connection.close()


def test_only_modern_tls_is_spoken(appliance):
    _, base, _ = appliance
    version, cipher, _ = handshake(base + 700, unverified())
    assert version == "TLSv1.3"
    version, cipher, _ = handshake(base + 700, unverified(ssl.TLSVersion.TLSv1_2))
    assert version == "TLSv1.2" and cipher.startswith("ECDHE-") and "GCM" in cipher
    with pytest.raises(ssl.SSLError):
        handshake(base + 700, unverified(ssl.TLSVersion.TLSv1_1, "ALL:@SECLEVEL=0"))
    with pytest.raises(ssl.SSLError):  # no forward secrecy, no CBC
        handshake(base + 700, unverified(ssl.TLSVersion.TLSv1_2, "AES128-SHA:AES256-SHA"))


def test_a_dead_frontend_leaves_the_rotation_and_comes_back(appliance):
    data, base, _ = appliance
    kill_and_keep_down(data, "web0")  # haproxy must take it out
    try:
        log = data / "logs" / "haproxy0.log"
        wait_for(lambda: re.search(r"Server frontends/web0 is DOWN", log.read_text()),
                 timeout=30, what="haproxy0 to take web0 out")
        answers = [get(base + 700, "/health")[0] for _ in range(40)]
        assert answers == [200] * 40  # every request went to web1
    finally:
        run(data, "start", "web0")
    wait_for(lambda: re.search(r"Server frontends/web0 is UP", log.read_text()),
             timeout=30, what="haproxy0 to take web0 back")


def test_a_page_goes_on_through_the_other_haproxy_when_its_own_dies(page, appliance):
    data, base, _ = appliance
    assert page.evaluate("state.ws.url").startswith(f"wss://127.0.0.1:{base + 700}/")
    start_printing(page, 40)
    kill_and_keep_down(data, "haproxy0")
    try:
        expect_every_line_once(page, 40)
        assert page.evaluate("state.ws.url").startswith(f"wss://127.0.0.1:{base + 701}/")
    finally:
        run(data, "start", "haproxy0")


def test_a_page_goes_on_when_the_frontend_behind_its_haproxy_dies(page, appliance):
    """web1 stopped, so the page's websocket is web0's; web1 back, web0
    killed: the page reconnects through the same haproxy, to web1."""
    data, _, _ = appliance
    run(data, "stop", "web1")
    try:
        page.reload()
        wait_ready(page)
    finally:
        run(data, "start", "web1")
    start_printing(page, 30)
    kill_and_keep_down(data, "web0")
    try:
        expect_every_line_once(page, 30)
    finally:
        run(data, "start", "web0")


def test_status_and_check_know_the_haproxies(appliance):
    data, _, _ = appliance
    rows = {r["name"]: r for r in json.loads(run(data, "status", "--json").stdout)}
    assert rows["haproxy0"]["state"] == rows["haproxy1"]["state"] == "RUNNING"
    kill_and_keep_down(data, "haproxy1")
    try:
        checked = run(data, "check", check=False)
        assert checked.returncode == 10 and "problem: haproxy1 is STOPPED" in checked.stdout
    finally:
        run(data, "start", "haproxy1")
