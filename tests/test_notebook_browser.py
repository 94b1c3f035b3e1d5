"""Jupyter notebooks in real Chromium against a real appliance (the fixtures
of test_browser): run cells, download them as .ipynb and .sage, open the
notebook again by upload and by ?ipynb=, and refuse what must be refused."""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

import nbformat
import pytest
from playwright.sync_api import expect

from tests import test_browser as e2e
from tests.test_browser import ARTIFACTS, cell, run_cell, type_code, wait_ready

# test_browser's fixtures: an appliance for this module, Chromium, a fresh page.
appliance, page = e2e.appliance, e2e.page

pytestmark = pytest.mark.slow

CELLS = ["a = 6", "print('hi')\na * 7", "plot(sin(x), (x, 0, 2*pi))", "%md\n# Notes\n*six*"]
# Each cell as the page would run it: a text cell's editor holds its Markdown
# without the %md line.
CODES = ("() => state.order.map((id) => { const c = state.cells.get(id);"
         " return (c.text ? '%md\\n' : '') + c.editor.getValue(); })")


def codes(page) -> list[str]:
    return page.evaluate(CODES)


def fresh_page(chromium, base: int, path: str = "/"):
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(30000)
    page.goto(f"http://127.0.0.1:{base}{path}")
    wait_ready(page)
    return context, page


def message(page):
    return page.locator("#notebook-message")


@pytest.fixture
def worked(page, tmp_path):
    """A page that ran a few cells (one of them an error), and its download."""
    for index, code in enumerate(CELLS):
        run_cell(page, code, index)
    type_code(page, "1/0")
    page.keyboard.press("Shift+Enter")
    expect(cell(page, 4)).to_have_attribute("data-status", "error")
    expect(cell(page, 2).locator("img")).to_have_count(1)
    with page.expect_download() as info:
        page.click("#nb-download")
    download = info.value
    assert download.suggested_filename == "worksheet.ipynb"
    path = tmp_path / "worksheet.ipynb"
    download.save_as(path)
    return page, path


def test_the_download_is_a_valid_notebook_with_outputs_and_images(worked, tmp_path):
    page, path = worked
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "sagemath"
    assert [c.source for c in nb.cells] == [*CELLS[:3], "# Notes\n*six*", "1/0"]
    assert [c.cell_type for c in nb.cells] == ["code"] * 3 + ["markdown", "code"]
    printed, plotted, failed = nb.cells[1].outputs, nb.cells[2].outputs, nb.cells[4].outputs
    assert (printed[0].output_type, printed[0].text) == ("stream", "hi\n")
    assert printed[1].output_type == "execute_result" and printed[1].data["text/plain"] == "42"
    image = plotted[0].data
    assert "<svg" in image.get("image/svg+xml", "") or image.get("image/png")
    assert failed[0].output_type == "error" and failed[0].ename == "ZeroDivisionError"
    with page.expect_download() as info:
        page.click("#nb-script")
    assert info.value.suggested_filename == "worksheet.sage"
    script = tmp_path / "worksheet.sage"
    info.value.save_as(script)
    assert script.read_text().startswith("# %%\na = 6\n\n# %%\nprint('hi')\na * 7\n")
    assert "# %% [markdown]\n# # Notes\n# *six*\n" in script.read_text()


def test_opening_the_download_by_upload_gives_the_same_cells(worked, chromium, appliance):
    page, path = worked
    ran = [code for code in codes(page) if code]
    context, other = fresh_page(chromium, appliance[1])
    try:
        with other.expect_file_chooser() as chooser:
            other.click("#nb-open")
        chooser.value.set_files(path)
        expect(message(other)).to_have_text(re.compile("opened worksheet.ipynb: 5 cells added"))
        assert codes(other) == ran
        other.screenshot(path=ARTIFACTS / "notebook_opened_by_upload.png", full_page=True)
        # Opened again: added below, nothing replaced.
        other.locator("#nb-file").set_input_files(path)
        expect(other.locator(".cell")).to_have_count(10)
        assert codes(other) == ran + ran
    finally:
        context.close()


def test_opening_by_address_gives_the_same_cells_and_not_twice_on_reload(worked, chromium,
                                                                         appliance):
    page, path = worked
    ran = [code for code in codes(page) if code]
    base = appliance[1]
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    try:
        # A file at an address of the appliance, as the page fetches it.
        address = f"http://127.0.0.1:{base}/static/files/worksheet.ipynb"
        context.route(address, lambda route: route.fulfill(
            path=path, content_type="application/x-ipynb+json"))
        other = context.new_page()
        other.goto(f"http://127.0.0.1:{base}/?ipynb=/static/files/worksheet.ipynb")
        wait_ready(other)
        expect(message(other)).to_contain_text("opened worksheet.ipynb: 5 cells added")
        assert codes(other) == ran
        expect(other).to_have_url(f"http://127.0.0.1:{base}/")  # a reload opens it no more
    finally:
        context.close()


def test_a_permalink_opens_as_a_notebook_by_its_ipynb_address(worked, chromium, appliance):
    page, _ = worked
    page.click("#share")
    expect(page.locator("#sharelink")).to_have_value(re.compile(r"/s/[A-Za-z]{6,}$"))
    link = page.locator("#sharelink").input_value().rsplit("/", 1)[1]
    context, other = fresh_page(chromium, appliance[1], f"/?ipynb=/s/{link}.ipynb")
    try:
        expect(message(other)).to_contain_text(f"opened {link}.ipynb: 5 cells added")
        assert codes(other) == [code for code in codes(page) if code]
    finally:
        context.close()


def test_an_address_elsewhere_is_refused_and_never_fetched(chromium, appliance):
    asked = []
    context = chromium.new_context()
    try:
        other = context.new_page()
        other.on("request", lambda request: asked.append(request.url))
        other.goto(f"http://127.0.0.1:{appliance[1]}/?ipynb=https://elsewhere.example/x.ipynb")
        wait_ready(other)
        expect(message(other)).to_have_text(re.compile(
            "^.ipynb= opens notebooks of this appliance only, not elsewhere.example: "
            "download the file and use Open .ipynb"))
        expect(other.locator(".cell")).to_have_count(1)
        assert asked and not [url for url in asked if urlsplit(url).hostname != "127.0.0.1"]
        other.screenshot(path=ARTIFACTS / "notebook_address_refused.png")
    finally:
        context.close()


def test_bad_files_are_refused_in_one_line_and_the_page_keeps_its_cells(page, tmp_path):
    run_cell(page, "b = 2", 0)
    before = codes(page)
    huge = tmp_path / "huge.ipynb"
    with huge.open("wb") as f:
        f.truncate(50 << 20)
    old = json.dumps({"nbformat": 3, "nbformat_minor": 0, "metadata": {}, "worksheets": []})
    files = [({"name": "notes.ipynb", "mimeType": "application/json", "buffer": b"not json"},
              "notes.ipynb: not a notebook: the file is not JSON"),
             ({"name": "old.ipynb", "mimeType": "application/json", "buffer": old.encode()},
              "old.ipynb: the notebook is nbformat 3, not 4"),
             (huge, "huge.ipynb is 50.0 MB; notebooks are at most 16 MB here")]
    for chosen, words in files:
        page.locator("#nb-file").set_input_files(chosen)
        expect(message(page)).to_contain_text(words)
        assert "\n" not in message(page).locator(".text").inner_text()
        assert codes(page) == before
    page.screenshot(path=ARTIFACTS / "notebook_bad_file.png")
