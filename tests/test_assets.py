"""Static files as browsers get them (web/assets.py): minified, compressed
once, named by their content and cached for a year, while pages are never
cached and old plain names keep working. Flask's test client for the
headers; a real frontend in Chromium for the page, its 3D viewer and the
300 KB first-load budget."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import tempfile
import urllib.request
from pathlib import Path

import brotli
import pytest
from playwright.sync_api import expect, sync_playwright

from tests.helpers import kill_everything_of
from tests.page_load import launch, visit
from tests.test_browser import result, run_cell
from tests.test_web import web_db  # noqa: F401  (a fixture: a migrated database)
from tests.web_client import WebProcess
from tests.worker_client import WorkerProcess, make_keys
from web import assets, create_app

pytestmark = pytest.mark.filterwarnings(
    # Flask-Limiter warns that memory:// is not for production; here it is the point.
    "ignore:Using the in-memory storage:UserWarning")
BUDGET = 300_000  # bytes on the wire for a first visit (issue 11)
EVERYTHING = {"Accept-Encoding": "gzip, deflate, br, zstd"}  # what Chromium sends


@pytest.fixture
def client():
    return create_app({}).test_client()


def static_urls(page: str) -> list[str]:
    return re.findall(r'(?:src|href)="(/static/[^"]+)"', page)


def body(response) -> bytes:
    coding = response.headers.get("Content-Encoding")
    return {"br": brotli.decompress, "gzip": gzip.decompress}.get(coding, bytes)(response.data)


# ------------------------------------------------------------------ names and lifetimes

def test_pages_name_hashed_assets_and_are_never_cached(client):
    source = (assets.STATIC / "index.html").read_text()
    assert '"/static/app.js"' in source  # the source keeps plain names
    manifest = assets.current()
    for path, status in (("/", 200), ("/s", 200), ("/s/nosuchlink", 404)):
        response = client.get(path, headers=EVERYTHING)
        assert response.status_code == status
        assert response.headers["Cache-Control"] == "no-cache"
        urls = static_urls(body(response).decode())
        assert urls and all(url[len("/static/"):] in manifest.by_hashed for url in urls), urls


def test_hashed_names_live_a_year_and_plain_ones_a_short_while(client):
    page = body(client.get("/", headers=EVERYTHING)).decode()
    for url in static_urls(page):
        response = client.get(url)
        assert response.status_code == 200, url
        assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert response.headers["Access-Control-Allow-Origin"] == "*"
    [app_js] = [url for url in static_urls(page) if re.fullmatch(r"/static/app\.\w+\.js", url)]
    plain = client.get("/static/app.js")
    assert plain.status_code == 200 and plain.headers["Cache-Control"] == assets.SHORT
    assert plain.data == client.get(app_js).data
    # A page of the previous version asks for its hashed name: today's file.
    older = client.get("/static/app.0123456789.js")
    assert older.status_code == 200 and older.headers["Cache-Control"] == assets.SHORT
    assert older.data == plain.data
    assert client.get("/static/nothing.js").status_code == 404
    assert client.get("/static/.compressed/x").status_code == 404


def test_the_3d_viewer_page_keeps_its_name_and_headers_and_names_hashed_scripts(client):
    response = client.get("/static/viewer3d.html", headers=EVERYTHING)
    assert response.headers["Cache-Control"] == "no-cache"
    assert "sandbox allow-scripts" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "SAMEORIGIN"
    [script] = re.findall(r'src="(/static/viewer3d\.\w+\.js)"', body(response).decode())
    module = client.get(script).data.decode()
    three = re.search(r'from"(/static/vendor/three/three\.module\.min\.\w+\.js)"', module)
    assert three, module[:200]
    assert client.get(three[1]).headers["Cache-Control"].endswith("immutable")


# ------------------------------------------------------------------ minified, compressed

def test_assets_come_in_the_best_coding_the_browser_accepts(client):
    url = assets.current().url("vendor/codemirror/codemirror.js")
    identity = client.get(url)
    assert "Content-Encoding" not in identity.headers
    assert identity.headers["Vary"] == "Accept-Encoding"  # for caches in between
    for accepted, coding in (("gzip, deflate, br", "br"), ("gzip", "gzip"),
                             ("br;q=0, gzip", "gzip"), ("identity", None)):
        response = client.get(url, headers={"Accept-Encoding": accepted})
        assert response.headers.get("Content-Encoding") == coding, accepted
        assert response.headers["Vary"] == "Accept-Encoding"
        assert body(response) == identity.data
        assert len(response.data) < len(identity.data) / 3 or coding is None
    # Each coding has its own ETag, and a browser that has it gets a 304.
    tag = client.get(url, headers=EVERYTHING).headers["ETag"]
    assert tag != identity.headers["ETag"]
    again = client.get(url, headers={**EVERYTHING, "If-None-Match": tag})
    assert again.status_code == 304 and again.data == b""
    font = client.get(assets.current().url("vendor/katex/fonts/KaTeX_Main-Regular.woff2"),
                      headers=EVERYTHING)
    assert "Content-Encoding" not in font.headers and "Vary" not in font.headers


def test_codemirror_is_minified_and_keeps_its_license_notice(client):
    source = (assets.STATIC / "vendor/codemirror/codemirror.js").read_text()
    served = client.get("/static/vendor/codemirror/codemirror.js").data.decode()
    assert len(served) < 0.7 * len(source)
    assert served.startswith("// CodeMirror, copyright (c) by Marijn Haverbeke")
    code = served[served.index("\n(function"):]
    assert "\n\n" not in code and not re.search(r"\n[ \t]", code)  # no blank, no indent


@pytest.fixture
def static_root(monkeypatch):
    """A static folder of our own, served by the app and rechecked at once."""
    root = Path(tempfile.mkdtemp(prefix="salvus-static-"))
    (root / "fonts").mkdir()
    (root / "fonts/f.woff2").write_bytes(os.urandom(600))
    (root / "style.css").write_text("/* a comment */\nbody {\n  font: url(fonts/f.woff2);\n}\n"
                                    "p { background: url('missing.png') }\n")
    (root / "main.js").write_text("// says hello\n" + "console.log('hello');\n" * 200
                                  + 'import("/static/other.js");\n')
    (root / "other.js").write_text('import "/static/main.js";  // a cycle\n')
    (root / "page.html").write_text('<link href="/static/style.css"><script src='
                                    '"/static/main.js"></script><!--SHARED-->')
    monkeypatch.setattr(assets, "STATIC", root)
    monkeypatch.setattr(assets, "CACHE", root / ".compressed")
    monkeypatch.setattr(assets, "RECHECK", 0)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_references_are_rewritten_to_hashed_names(static_root):
    manifest = assets.current()
    style = manifest.assets["style.css"].body.decode()
    font = manifest.assets["fonts/f.woff2"].hashed_name
    assert f"url({font})" in style
    assert "url('missing.png')" in style and "comment" not in style
    page = manifest.assets["page.html"].body.decode()
    assert f'href="/static/{manifest.assets["style.css"].hashed_name}"' in page
    # A cycle of references leaves one of them plain, and nothing hangs.
    main, other = manifest.assets["main.js"].body.decode(), manifest.assets["other.js"]
    assert f"/static/{other.hashed_name}" in main and '"/static/main.js"' in other.body.decode()
    # A changed font changes the style sheet's name, and so the page's.
    (static_root / "fonts/f.woff2").write_bytes(os.urandom(600))
    again = assets.current()
    assert again.assets["style.css"].hashed_name != manifest.assets["style.css"].hashed_name
    assert again.assets["page.html"].digest != manifest.assets["page.html"].digest


def test_a_new_static_file_is_served_without_a_listing_or_a_restart(static_root):
    client = create_app({}).test_client()
    assert client.get("/static/notebook.js").status_code == 404
    (static_root / "notebook.js").write_text("export const x = 1;\n")
    response = client.get("/static/notebook.js")
    assert response.status_code == 200 and response.data == b"export const x=1;"
    assert client.get("/static/" + assets.current().assets["notebook.js"].hashed_name) \
        .headers["Cache-Control"].endswith("immutable")


def test_compression_is_done_once_and_the_builds_is_used(static_root, monkeypatch):
    calls = []
    real = assets.compress
    monkeypatch.setattr(assets, "compress", lambda *a: calls.append(a[1:]) or real(*a))
    client = create_app({}).test_client()
    for _ in range(3):
        assert client.get("/static/main.js", headers=EVERYTHING).headers["Content-Encoding"] \
            == "br"
    assert calls == [("br", assets.SERVE_LEVELS["br"])]
    # The build (make install) compresses everything at the best levels; a
    # frontend then compresses nothing itself.
    files, _, _ = assets.build()
    assert files == 5 and set(calls[1:]) == {("br", 11), ("gzip", 9)}
    calls.clear()
    monkeypatch.setattr(assets, "_current", assets._Current())
    best = client.get("/static/main.js", headers=EVERYTHING)
    gzipped = client.get("/static/main.js", headers={"Accept-Encoding": "gzip"})
    assert calls == [] and best.data == brotli.compress(
        assets.current().assets["main.js"].body, quality=11)
    assert gzip.decompress(gzipped.data) == assets.current().assets["main.js"].body
    # Compressed files of bodies no longer served go at the next build.
    old = assets.current().assets["main.js"].digest
    (static_root / "main.js").write_text("console.log('changed');\n" * 100)
    assets.build()
    served = {f"{asset.digest}.{coding}" for asset in assets.current().assets.values()
              if asset.compressible for coding in assets.CODINGS}
    assert set(os.listdir(static_root / ".compressed")) == served
    assert f"{old}.br" not in served


# ------------------------------------------------------------------ in Chromium

@pytest.fixture(scope="module")
def frontend(web_db):  # noqa: F811
    """One frontend with one python worker and a database, in a temp folder."""
    folder = Path(tempfile.mkdtemp(prefix="salvus-assets-", dir="/tmp"))
    os.chmod(folder, 0o755)
    worker = web = None
    try:
        keys = make_keys(folder / "keys")
        worker = WorkerProcess(folder / "w0", "python", keys=keys)
        worker.wait_ready()
        web = WebProcess(folder / "web", [("w0", worker.endpoint)], web_db, keys=keys)
        web.wait_ready()
        yield web
    finally:
        if web:
            web.stop()
        if worker:
            worker.stop()
        kill_everything_of(folder)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def chromium():
    with sync_playwright() as playwright:
        browser = launch(playwright)
        yield browser
        browser.close()


VIEWER = """scene => {
  const frame = document.createElement("iframe");
  frame.sandbox = "allow-scripts";
  addEventListener("message", (event) => {
    if (event.source === frame.contentWindow && event.data === "viewer3d-ready")
      frame.contentWindow.postMessage(scene, "*");
  });
  frame.src = "/static/viewer3d.html";
  document.body.append(frame);
}"""


def run_one_plus_one(page) -> None:
    page.keyboard.press("Backspace")  # the key page_load typed
    run_cell(page, "1+1", 0)
    expect(result(page, 0)).to_have_attribute("data-plain", "2")


@pytest.mark.slow
def test_a_first_visit_fits_the_budget_and_the_page_works(chromium, frontend):
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    try:
        first = visit(context, frontend.url + "/", then=run_one_plus_one)
        assert first.wire_bytes <= BUDGET, f"{first.wire_bytes} bytes on the wire"
        static = [r for r in first.responses if "/static/" in r["url"]]
        assert len(static) >= 8
        for response in static:
            assert response["status"] == 200, response
            assert response["cache"] == assets.IMMUTABLE, response
            text = not response["url"].endswith((".woff2", ".svg"))
            assert response["encoding"] == ("br" if text else ""), response
        # A second visit takes the assets from the cache: only the page moves.
        warm = visit(context, frontend.url + "/")
        assert all(r["from_cache"] for r in warm.responses if "/static/" in r["url"])
        assert warm.wire_bytes < 15_000, warm.wire_bytes
    finally:
        context.close()


@pytest.mark.slow
def test_a_permalink_page_names_hashed_assets_and_opens_its_cells(chromium, frontend):
    request = urllib.request.Request(
        frontend.url + "/api/share", data=json.dumps({"cells": [{"code": "6*7"}]}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        link = json.loads(response.read())["url"]
    with urllib.request.urlopen(frontend.url + link, timeout=10) as response:
        assert response.headers["Cache-Control"] == "no-cache"
        urls = static_urls(response.read().decode())
    assert urls and all(url[len("/static/"):] in assets.current().by_hashed for url in urls)
    context = chromium.new_context()
    try:
        page = context.new_page()
        page.goto(frontend.url + link + "?run=1")
        expect(result(page, 0)).to_have_attribute("data-plain", "42")
    finally:
        context.close()


@pytest.mark.slow
def test_the_3d_viewer_draws_with_its_hashed_module_scripts(chromium, frontend):
    context = chromium.new_context()
    try:
        page = context.new_page()
        fetched = []
        page.on("response", lambda r: fetched.append((r.url, r.status, r.all_headers())))
        page.goto(frontend.url + "/s/nosuchlink")  # a light page of ours
        # Frame the viewer as the worksheet does, and hand it a scene.
        scene = {"bounds": [[0, 0, 0], [1, 1, 1]],
                 "objects": [["line", {"points": [0, 0, 0, 1, 1, 1], "color": "#ff0000"}]]}
        page.evaluate(VIEWER, json.dumps(scene))
        viewer = page.frame_locator("iframe")
        expect(viewer.locator("body")).to_have_attribute("data-drawn", "1")
        scripts = [(url, status, headers) for url, status, headers in fetched
                   if re.search(r"/static/(viewer3d|vendor/three/three\.module\.min)\.\w+\.js$",
                                url)]
        assert len(scripts) == 2, fetched
        for _, status, headers in scripts:  # fetched from the sandbox's own origin
            assert status == 200 and headers["cache-control"] == assets.IMMUTABLE
            assert headers["content-encoding"] == "br"
    finally:
        context.close()
