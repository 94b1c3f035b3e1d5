"""A first visit as Chromium sees it: the bytes that crossed the wire and the
time until the first editor takes input. Shared by tests/test_assets.py (the
300 KB budget) and bench/first_load_bench.py (Salvus beside Jupyter)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from playwright.sync_api import Browser, BrowserContext, Page, Playwright

from tests.test_browser import CHROMIUM_ARGS

# Chrome DevTools' "3G" preset: 1.6 Mbps down, 750 kbps up, 150 ms round trip.
THREE_G = {"offline": False, "latency": 150, "downloadThroughput": 1.6e6 / 8,
           "uploadThroughput": 750e3 / 8}


@dataclass(frozen=True)
class Editor:
    """Where a product's first cell editor is, and how to read its text."""

    selector: str
    text: str  # a JS function of the element


SALVUS = Editor(".cell .CodeMirror", "el => el.CodeMirror.getValue()")
# The notebook shown: Lab may restore others in hidden tabs.
JUPYTER = Editor(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell .cm-content",
                 "el => el.textContent")


@dataclass
class Visit:
    seconds: float  # from asking for the page to the typed key showing
    wire_bytes: int = 0  # headers and bodies as received (encoded)
    responses: list[dict] = field(default_factory=list)  # url, status, encoding


def launch(playwright: Playwright) -> Browser:
    executable = shutil.which("chromium")
    assert executable, "Debian's chromium is installed by `make test` (apt-get install chromium)"
    return playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)


def visit(context: BrowserContext, url: str, editor: Editor = SALVUS,
          network: dict | None = None, timeout: float = 60,
          then: Callable[[Page], None] | None = None) -> Visit:
    """Open ``url`` in a new tab of ``context`` (its cache is the context's),
    click into the first editor and type; wait for the network to settle so
    every byte of the load is counted. ``network``: CDP network conditions;
    ``then``: what to do with the page before it is closed."""
    page = context.new_page()
    page.set_default_timeout(timeout * 1000)
    cdp = context.new_cdp_session(page)
    seen = Visit(0.0)
    cdp.on("Network.loadingFinished", lambda e: _count(seen, e))
    cdp.on("Network.responseReceived", lambda e: seen.responses.append(_response(e)))
    cdp.send("Network.enable")
    if network:
        cdp.send("Network.emulateNetworkConditions", network)
    try:
        started = time.perf_counter()
        page.goto(url, wait_until="commit")
        page.locator(editor.selector).first.click()
        page.keyboard.type("7")
        page.wait_for_function(f"() => ({editor.text})(document.querySelector("
                               f"{editor.selector!r})).includes('7')")
        seen.seconds = time.perf_counter() - started
        page.wait_for_load_state("networkidle")
        if then:
            then(page)
    finally:
        page.close()
    return seen


def _count(seen: Visit, event: dict) -> None:
    seen.wire_bytes += int(event.get("encodedDataLength", 0))


def _response(event: dict) -> dict:
    response = event["response"]
    headers = {k.lower(): v for k, v in response.get("headers", {}).items()}
    return {"url": response["url"], "status": response["status"],
            "encoding": headers.get("content-encoding", ""),
            "cache": headers.get("cache-control", ""),
            "from_cache": bool(response.get("fromDiskCache") or response.get("fromMemoryCache"))}
