"""Jupyter notebooks: web/notebooks.py on its own (the format), then its
routes through Flask's test client (create_app), with a real PostgreSQL for
the blob store and permalinks. The page's side is in test_notebook_browser."""

from __future__ import annotations

import base64
import io
import json

import nbformat
import psycopg2
import pytest

from salvusctl import migrate
from salvusctl.resources import sql_dir
from web import blobs, create_app, notebooks, permalinks
from web.notebooks import NotebookError

pytestmark = pytest.mark.filterwarnings(
    # Flask-Limiter warns that memory:// is not for production; here it is the point.
    "ignore:Using the in-memory storage:UserWarning")

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 40  # the blob store checks the signature only
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"></svg>'
PNG_SHA1, SVG_SHA1 = "a" * 40, "b" * 40
STORE = {PNG_SHA1: ("image/png", PNG), SVG_SHA1: ("image/svg+xml", SVG)}

TRACEBACK = ("Traceback (most recent call last):\n  File \"<cell>\", line 1, in <module>\n"
             "ZeroDivisionError: rational division by zero\n")
SHEET = {"language": "sage", "cells": [
    {"code": "for i in range(2): print(i)",
     "outputs": [{"type": "stream", "name": "stdout", "text": "0\n1\n"}]},
    {"code": "%md\n# Notes\n*Euler*: $e^{i\\pi}+1=0$",
     "outputs": [{"type": "result", "data": {"text/html": "<h1>Notes</h1>"}}]},
    {"code": "show(x^2)\nx^3", "outputs": [
        {"type": "result", "data": {"text/plain": "x^2", "text/latex": "$$x^{2}$$"}},
        {"type": "result", "data": {"text/plain": "x^3", "text/html": "<i>x</i>³"}}]},
    {"code": "plot(sin(x))\nplot(cos(x))", "outputs": [
        {"type": "image", "url": f"/blobs/{PNG_SHA1}", "width": 300},
        {"type": "image", "url": f"/blobs/{SVG_SHA1}", "width": None}]},
    {"code": "1/0", "outputs": [{"type": "error", "traceback": TRACEBACK}]},
    {"code": "import time\ntime.sleep(100)", "outputs": [
        {"type": "stream", "name": "stderr", "text": "warn\n"},
        {"type": "notice", "text": "stopped after 60 s, the wall_time limit"}]},
    {"code": "a = 6", "outputs": []},
    {"code": "   ", "outputs": []},  # an empty cell: left out
]}


def fetch(sha1: str):
    return STORE.get(sha1)


def exported(sheet: dict = SHEET) -> nbformat.NotebookNode:
    name, mime, text = notebooks.export(sheet, fetch)
    assert (name, mime) == ("worksheet.ipynb", "application/x-ipynb+json")
    nb = nbformat.reads(text, as_version=4)
    nbformat.validate(nb)
    return nb


def notebook_bytes(cells: list[dict], minor: int = 5, **top) -> bytes:
    return json.dumps({"nbformat": 4, "nbformat_minor": minor, "metadata": {},
                       "cells": cells, **top}).encode()


# ------------------------------------------------------------------ the format


def test_export_then_import_gives_the_same_cells_in_the_same_order():
    text = notebooks.export(SHEET, fetch)[2]
    opened = notebooks.read(text.encode())
    assert [c["code"] for c in opened["cells"]] == [c["code"] for c in SHEET["cells"][:-1]]
    assert [c["type"] for c in opened["cells"]] == ["code", "markdown", *["code"] * 5]
    assert opened["language"] == "sage"


def test_a_text_cell_of_the_page_is_a_markdown_cell_and_comes_back_as_a_md_cell():
    sheet = {"cells": [{"type": "markdown", "code": "# Title"}, {"code": "%md"}]}
    nb = exported(sheet)
    assert [(c.cell_type, c.source) for c in nb.cells] == [("markdown", "# Title"),
                                                           ("markdown", "")]
    opened = notebooks.read(nbformat.writes(nb).encode())["cells"]
    assert [c["code"] for c in opened] == ["%md\n# Title", "%md"]


def test_outputs_become_nbformat_outputs_and_images_are_embedded_from_the_blob_store():
    nb = exported()
    stream, markdown, shown, plots, error, stopped, quiet = nb.cells
    assert quiet.outputs == [] and quiet.source == "a = 6"
    assert stream.outputs == [nbformat.v4.new_output("stream", name="stdout", text="0\n1\n")]
    assert markdown.cell_type == "markdown" and "outputs" not in markdown
    # The value a cell ends with is its Out[n]; what it showed before is a display.
    assert [o.output_type for o in shown.outputs] == ["display_data", "execute_result"]
    assert shown.outputs[0].data == {"text/plain": "x^2", "text/latex": "$$x^{2}$$"}
    assert shown.outputs[1].data["text/html"] == "<i>x</i>³"
    png, svg = plots.outputs
    assert base64.b64decode(png.data["image/png"]) == PNG
    assert png.metadata == {"image/png": {"width": 300}}
    assert svg.data["image/svg+xml"] == SVG.decode()  # a text type: kept as text
    [err] = error.outputs
    assert (err.ename, err.evalue) == ("ZeroDivisionError", "rational division by zero")
    assert err.traceback == TRACEBACK.rstrip("\n").split("\n")
    assert [(o.name, o.text) for o in stopped.outputs] == [
        ("stderr", "warn\n"), ("stderr", "stopped after 60 s, the wall_time limit\n")]
    # Cells that ran are numbered in order; one that showed nothing has no number.
    counts = [c.execution_count for c in nb.cells if c.cell_type == "code"]
    assert counts == [1, 2, 3, 4, 5, None]
    assert shown.outputs[1].execution_count == 2


def test_the_kernel_is_sagemath_or_python_3_as_the_language_switch_says():
    sage = exported().metadata
    assert sage.kernelspec == {"name": "sagemath", "display_name": "SageMath",
                               "language": "sage"}
    assert sage.language_info.name == "sage"
    python = exported({**SHEET, "language": "python"}).metadata
    assert python.kernelspec.name == "python3" and python.language_info.name == "python"
    assert notebooks.read(nbformat.writes(exported({**SHEET, "language": "python"})).encode()
                          )["language"] == "python"


def test_an_image_not_in_the_blob_store_becomes_a_note_and_no_url_is_ever_fetched():
    asked = []
    sheet = {"cells": [{"code": "plot(x)", "outputs": [
        {"type": "image", "url": "/blobs/" + "c" * 40, "width": None}]}]}
    nb = nbformat.reads(notebooks.export(sheet, lambda sha1: asked.append(sha1))[2], 4)
    assert asked == ["c" * 40]
    assert "no longer stored" in nb.cells[0].outputs[0].data["text/plain"]
    for url in ("http://169.254.169.254/latest/x.png", "/blobs/../secrets", "file:///etc/x"):
        with pytest.raises(NotebookError, match="must be /blobs/<sha1>"):
            notebooks.export({"cells": [{"code": "1", "outputs": [
                {"type": "image", "url": url, "width": None}]}]}, lambda _: asked.append(_))
    assert asked == ["c" * 40]


def test_the_script_has_percent_cells_and_markdown_as_comments():
    name, mime, text = notebooks.export({**SHEET, "format": "script"}, fetch)
    assert (name, mime) == ("worksheet.sage", "text/x-python")
    assert text.startswith("# %%\nfor i in range(2): print(i)\n\n# %% [markdown]\n"
                           "# # Notes\n# *Euler*: $e^{i\\pi}+1=0$\n\n# %%\nshow(x^2)\nx^3\n")
    assert text.count("# %%") == 7 and text.endswith("# %%\na = 6\n")
    python = notebooks.export({**SHEET, "format": "script", "language": "python",
                               "name": "abcDEFgh"}, fetch)
    assert python[0] == "abcDEFgh.py"
    compile(python[2].replace("%md", "#"), "worksheet.py", "exec")  # plain Python


def test_a_notebooks_cell_sources_may_be_lists_of_strings_and_ids_may_be_missing():
    cells = [{"cell_type": "code", "source": ["a = 1\n", "a + 1"], "metadata": {},
              "outputs": [], "execution_count": None},
             {"cell_type": "markdown", "source": ["# T", "itle"], "metadata": {}},
             {"cell_type": "raw", "source": "raw text", "metadata": {}}]
    for minor in (4, 5):  # 4.5 wants ids; older writers left them out
        opened = notebooks.read(notebook_bytes(cells, minor))
        assert [c["code"] for c in opened["cells"]] == [
            "a = 1\na + 1", "%md\n# Title", "%md\n```\nraw text\n```"]
        assert opened["language"] is None


def bad_inputs() -> dict[str, tuple[bytes, int, str]]:
    code = {"cell_type": "code", "source": "1", "metadata": {}, "outputs": [],
            "execution_count": None}
    return {
        "not JSON": (b"\x89PNG not json", 400, "not a notebook: the file is not UTF-8"),
        "JSON, not text": (b"{'cells': 1}", 400, "not a notebook: the file is not JSON"),
        "a JSON list": (b"[1, 2]", 400, "no 'nbformat' field"),
        "some other JSON": (b'{"cells": []}', 400, "no 'nbformat' field"),
        "nbformat 3": (json.dumps({"nbformat": 3, "nbformat_minor": 0, "metadata": {},
                                   "worksheets": []}).encode(), 400,
                       "nbformat 3, not 4: open it in Jupyter and save it again"),
        "nbformat 5": (b'{"nbformat": 5, "cells": []}', 400, "nbformat 5, not 4"),
        "no cells": (b'{"nbformat": 4, "nbformat_minor": 5}', 400, "no list of 'cells'"),
        "a bad cell": (notebook_bytes([{**code, "source": 5}]), 400,
                       "at cells/0/source, 5 is not valid"),
        "50 MB": (b" " * (50 << 20), 413, "the file is 50.0 MB; a notebook opened here is "
                                          "at most 16 MB"),
        "10,000 cells": (notebook_bytes([{**code, "id": f"c{i}"} for i in range(10000)]), 413,
                         "the notebook has 10000 cells; a worksheet opens at most 1000"),
        "nested too deep": (b"[" * 100000 + b"]" * 100000, 400, "nested too deeply"),
    }


@pytest.mark.parametrize("case", list(bad_inputs()))
def test_bad_input_of_any_kind_is_refused_in_one_line_naming_the_fix(case):
    data, status, words = bad_inputs()[case]
    with pytest.raises(NotebookError) as refused:
        notebooks.read(data)
    assert refused.value.status == status
    assert words in refused.value.message and "\n" not in refused.value.message
    assert len(refused.value.message) < 300


@pytest.mark.parametrize(("body", "words"), [
    ([], "send {"), ({"cells": []}, "nothing to download yet"),
    ({"cells": [{"code": 1}]}, "cell 1 needs its 'code'"),
    ({"cells": [{"code": "1", "outputs": [{"type": "video"}]}]}, "cell 1's 'outputs'"),
    ({"cells": [{"code": "1"}], "language": "perl"}, "'language' must be"),
    ({"cells": [{"code": "1"}], "format": "pdf"}, "'format' must be"),
    ({"cells": [{"code": "1"}] * 1001}, "1001 cells; a download holds at most 1000"),
    ({"cells": [{"code": "1", "outputs": [{"type": "image", "url": "/blobs/" + "a" * 40,
                                           "width": None}] * 201}]}, "201 images"),
])
def test_a_bad_worksheet_is_refused_in_one_line(body, words):
    with pytest.raises(NotebookError) as refused:
        notebooks.export(body, fetch)
    assert words in refused.value.message and "\n" not in refused.value.message


def test_a_permalinks_cells_make_a_valid_notebook():
    text = notebooks.shared({"engine": "python", "cells": [{"code": "1+1"},
                                                           {"code": "%md\nhi"}]})
    nb = nbformat.reads(text, as_version=4)
    nbformat.validate(nb)
    assert [c.cell_type for c in nb.cells] == ["code", "markdown"]
    assert nb.metadata.kernelspec.name == "python3"


# ------------------------------------------------------------------ the routes


@pytest.fixture
def client():
    return create_app({"NAME": "web-under-test"}).test_client()


def test_export_answers_the_file_as_an_attachment(client):
    response = client.post("/api/notebook/export",
                           json={"cells": [{"code": "1+1", "outputs": [
                               {"type": "result", "data": {"text/plain": "2"}}]}]})
    assert response.status_code == 200
    assert response.headers["Content-Disposition"] == 'attachment; filename="worksheet.ipynb"'
    nb = nbformat.reads(response.get_data(as_text=True), as_version=4)
    nbformat.validate(nb)
    assert nb.cells[0].outputs[0].data == {"text/plain": "2"}
    script = client.post("/api/notebook/export", json={
        "format": "script", "language": "python", "cells": [{"code": "print(1)"}]})
    assert script.headers["Content-Disposition"] == 'attachment; filename="worksheet.py"'
    assert script.get_data(as_text=True) == "# %%\nprint(1)\n"


def test_import_takes_the_file_as_the_body_or_as_a_form_upload(client):
    data = notebooks.export(SHEET, fetch)[2].encode()
    by_body = client.post("/api/notebook/import", data=data,
                          headers={"Content-Type": "application/x-ipynb+json"})
    by_form = client.post("/api/notebook/import",
                          data={"file": (io.BytesIO(data), "worksheet.ipynb")})
    as_curl_sends_it = client.post("/api/notebook/import", data=data,  # --data-binary
                                   content_type="application/x-www-form-urlencoded")
    assert by_body.status_code == by_form.status_code == as_curl_sends_it.status_code == 200
    assert by_body.get_json() == by_form.get_json() == as_curl_sends_it.get_json() \
        == notebooks.read(data)


def test_the_routes_refuse_bad_input_with_one_line_of_json(client):
    for case in ("not JSON", "nbformat 3", "10,000 cells"):
        data, status, words = bad_inputs()[case]
        response = client.post("/api/notebook/import", data=data)
        assert response.status_code == status and words in response.get_json()["error"]
    # Bigger than the app's own request limit (2 MB), within the notebooks' (16 MB).
    big = notebook_bytes([{"cell_type": "markdown", "source": "x" * (4 << 20),
                           "metadata": {}, "id": "big"}])
    assert client.post("/api/notebook/import", data=big).status_code == 200
    too_big = client.post("/api/notebook/import", data=b" " * (50 << 20))
    assert too_big.status_code == 413
    assert too_big.get_json()["error"].startswith("the upload is 50.0 MB; notebooks are at "
                                                  "most 16 MB here")
    not_json = client.post("/api/notebook/export", data=b"{", content_type="application/json")
    assert not_json.status_code == 400 and "not valid JSON" in not_json.get_json()["error"]
    cross_site = client.post("/api/notebook/import", data=big,
                             headers={"Origin": "https://elsewhere.example"})
    assert cross_site.status_code == 403


@pytest.fixture
def stored(fresh_db, tmp_path):
    """An app on a migrated database holding the two images and a permalink."""
    conn = psycopg2.connect(fresh_db)
    migrate.migrate(conn, sql_dir())
    conn.close()
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(fresh_db)
    app = create_app({"NAME": "web-under-test", "DSN_FILE": str(dsn_file)})
    db = app.extensions["salvus"].db
    shas = [blobs.store(db, data, mime) for mime, data in STORE.values()]
    link = permalinks.store(db, {"engine": None, "cells": [{"code": "2+2"},
                                                           {"code": "%md\n*hi*"}]})
    yield app.test_client(), shas, link
    while not db.idle.empty():  # the pool's connections, before the database is dropped
        db.idle.get().close()


def test_export_embeds_images_from_the_blob_store(stored):
    client, (png, svg), _ = stored
    response = client.post("/api/notebook/export", json={"cells": [{"code": "plot(x)", "outputs": [
        {"type": "image", "url": f"/blobs/{png}", "width": 120},
        {"type": "image", "url": f"/blobs/{svg}", "width": None}]}]})
    nb = nbformat.reads(response.get_data(as_text=True), as_version=4)
    first, second = nb.cells[0].outputs
    assert base64.b64decode(first.data["image/png"]) == PNG
    assert second.data["image/svg+xml"] == SVG.decode()


def test_a_permalink_is_a_notebook_at_its_address_with_ipynb(stored):
    client, _, link = stored
    response = client.get(f"/s/{link}.ipynb")
    assert response.status_code == 200
    assert response.headers["Content-Disposition"] == f'attachment; filename="{link}.ipynb"'
    opened = client.post("/api/notebook/import", data=response.get_data()).get_json()
    assert [c["code"] for c in opened["cells"]] == ["2+2", "%md\n*hi*"]
    assert opened["language"] == "sage"
    missing = client.get("/s/NoSuchLink.ipynb")
    assert missing.status_code == 404 and "check the link" in missing.get_json()["error"]

