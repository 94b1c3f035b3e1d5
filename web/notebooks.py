"""Jupyter notebooks (.ipynb, nbformat 4) and scripts (.sage/.py) from a
worksheet, and a worksheet's cells from a notebook: the one owner of the
notebook format. Every notebook goes through ``nbformat.validate`` on its way
out and on its way in.

Export takes what the page shows (web/static/notebook.js sends it):

    {"format": "ipynb" | "script", "language": "sage" | "python",
     "name": "worksheet", "cells": [{"code": str, "outputs": [output, ...]}]}

    output: {"type": "stream", "name": "stdout" | "stderr", "text": str}
          | {"type": "result", "data": {"text/plain" | "text/html" | "text/latex": str}}
          | {"type": "image", "url": "/blobs/<sha1>", "width": int | null}
          | {"type": "error", "traceback": str}
          | {"type": "notice", "text": str}

Images are named by their URL; the caller's ``fetch`` (sha1 -> (mime, bytes))
gives their bytes, so only the blob store is ever read, never a URL.

Import gives back the cells only (outputs are the notebook's, not ours to
show without a run): {"language": "sage" | "python" | null,
"cells": [{"type": "code" | "markdown", "source": str, "code": str}]}
(``code``: the cell as the worksheet holds it, see ``_imported``).

A worksheet says "Markdown" by a first line ``%md``: such a cell is a
markdown cell in the notebook, and a markdown cell comes back as one, so
export then import gives the same cells.
"""

from __future__ import annotations

import base64
import importlib
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field


class _Lazy:
    """A module imported on first use: nbformat brings jsonschema (and, where
    jupyter's extras are installed, grammars compiled at import: 2 s). A
    frontend pays that on its first notebook, not at every start."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str):
        return getattr(importlib.import_module(self._name), attr)


nbformat = _Lazy("nbformat")
v4 = _Lazy("nbformat.v4")


MAX_BYTES = 16 << 20  # of a notebook opened, and of a worksheet sent to export
MAX_CELLS = 1000  # as many as a worksheet's layout holds (web/wire.py)
MAX_IMAGES = 200  # embedded in one download
SHA1_URL = re.compile(r"/blobs/([0-9a-f]{40})\Z")
NAME = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
RESULT_MIMES = ("text/plain", "text/html", "text/latex")
OUTPUT_TYPES = ("stream", "result", "image", "error", "notice")
EXCEPTION_LINE = re.compile(r"([A-Za-z_][\w.]*)(?::\s?(.*))?\Z")

# What Jupyter writes for these kernels (SageMath's is an IPython kernel).
KERNELS = {
    "sage": {"kernelspec": {"name": "sagemath", "display_name": "SageMath",
                            "language": "sage"},
             "language_info": {"name": "sage", "file_extension": ".py",
                               "mimetype": "text/x-python",
                               "codemirror_mode": {"name": "ipython", "version": 3},
                               "pygments_lexer": "ipython3"}},
    "python": {"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)",
                              "language": "python"},
               "language_info": {"name": "python", "file_extension": ".py",
                                 "mimetype": "text/x-python",
                                 "codemirror_mode": {"name": "ipython", "version": 3},
                                 "pygments_lexer": "ipython3",
                                 "nbconvert_exporter": "python"}},
}
SCRIPT_SUFFIX = {"sage": ".sage", "python": ".py"}

Fetch = Callable[[str], tuple[str, bytes] | None]


class NotebookError(Exception):
    """Bad input: ``status`` and a one-line ``message`` naming the fix."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Cell:
    kind: str  # "code" | "markdown"
    source: str
    outputs: list[dict] = field(default_factory=list)


@dataclass
class Worksheet:
    language: str
    cells: list[Cell]
    name: str = "worksheet"


# ------------------------------------------------------------------ export


def export(body, fetch: Fetch) -> tuple[str, str, str]:
    """(file name, mime type, text) of the download the page asked for."""
    sheet = worksheet(body)
    if body.get("format") == "script":
        return sheet.name + SCRIPT_SUFFIX[sheet.language], "text/x-python", script(sheet)
    return sheet.name + ".ipynb", "application/x-ipynb+json", dumps(notebook(sheet, fetch))


def worksheet(body) -> Worksheet:
    """The page's JSON, checked; cells with no code and no output are left out."""
    example = 'send {"language": "sage", "cells": [{"code": ..., "outputs": [...]}]}'
    if not isinstance(body, dict) or not isinstance(body.get("cells"), list):
        raise NotebookError(400, example)
    if body.get("format", "ipynb") not in ("ipynb", "script"):
        raise NotebookError(400, "'format' must be 'ipynb' or 'script'")
    language = body.get("language", "sage")
    if language not in KERNELS:
        raise NotebookError(400, "'language' must be 'sage' or 'python'")
    if len(body["cells"]) > MAX_CELLS:
        raise NotebookError(413, f"the worksheet has {len(body['cells'])} cells; a download "
                                 f"holds at most {MAX_CELLS}")
    cells = [_page_cell(c, i) for i, c in enumerate(body["cells"], 1)]
    cells = [cell for cell, sent in zip(cells, body["cells"], strict=True)
             if sent["code"].strip() or cell.outputs]
    if not cells:
        raise NotebookError(400, "nothing to download yet: the worksheet has no code")
    name = body.get("name")
    return Worksheet(language, cells, name if isinstance(name, str) and NAME.match(name)
                     else "worksheet")


def _page_cell(cell, number: int) -> Cell:
    if not isinstance(cell, dict) or not isinstance(cell.get("code"), str):
        raise NotebookError(400, f"cell {number} needs its 'code' as a string")
    outputs = cell.get("outputs", [])
    if not (isinstance(outputs, list) and all(_good_output(o) for o in outputs)):
        raise NotebookError(400, f"cell {number}'s 'outputs' must be a list of "
                                 f"{{\"type\": {'|'.join(OUTPUT_TYPES)}, ...}} as the page "
                                 "shows them")
    kind, source = markdown_or_code(cell["code"])
    if cell.get("type") == "markdown":  # a text cell: its editor holds no %md line
        kind, source = "markdown", cell["code"]
    # A text cell's output is its rendered Markdown: a saved worksheet shows
    # it so (a download leaves it out: Jupyter renders Markdown itself).
    return Cell(kind, source, outputs)


def _good_output(output) -> bool:
    kind = output.get("type") if isinstance(output, dict) else None
    text = lambda key: isinstance(output.get(key), str)  # noqa: E731
    if kind == "stream":
        return output.get("name") in ("stdout", "stderr") and text("text")
    if kind == "result":
        data = output.get("data")
        return isinstance(data, dict) and all(isinstance(v, str) for v in data.values())
    if kind == "image":
        width = output.get("width")
        return text("url") and (width is None or (type(width) is int and width > 0))
    return (kind == "error" and text("traceback")) or (kind == "notice" and text("text"))


def markdown_or_code(code: str) -> tuple[str, str]:
    """("markdown", its text) for a cell whose first line is ``%md``, as the
    worker reads it (sage_worker/modes.py); ("code", code) otherwise."""
    first, _, rest = code.partition("\n")
    return ("markdown", rest) if first.strip() == "%md" else ("code", code)


def notebook(sheet: Worksheet, fetch: Fetch) -> nbformat.NotebookNode:
    nb = v4.new_notebook(metadata={**KERNELS[sheet.language],
                                   "salvus": {"language": sheet.language}})
    images = sum(o.get("type") == "image" for c in sheet.cells for o in c.outputs)
    if images > MAX_IMAGES:
        raise NotebookError(413, f"the worksheet shows {images} images; a download holds at "
                                 f"most {MAX_IMAGES}: clear some outputs first")
    count = 0
    for cell in sheet.cells:
        if cell.kind == "markdown":
            nb.cells.append(v4.new_markdown_cell(cell.source))
            continue
        count += bool(cell.outputs)
        number = count if cell.outputs else None
        outputs = [_output(o, fetch, number, last=i == len(cell.outputs) - 1)
                   for i, o in enumerate(cell.outputs)]
        nb.cells.append(v4.new_code_cell(cell.source, execution_count=number,
                                         outputs=[o for o in outputs if o is not None]))
    return nb


def _output(output: dict, fetch: Fetch, number: int | None,
            last: bool) -> nbformat.NotebookNode | None:
    kind = output["type"]
    if kind == "stream":
        return v4.new_output("stream", name=output["name"], text=output["text"])
    if kind == "notice":  # the appliance's word on the run: a limit, a kill
        return v4.new_output("stream", name="stderr", text=output["text"].rstrip("\n") + "\n")
    if kind == "error":
        return _error(output["traceback"])
    if kind == "image":
        return _image(output, fetch)
    data = {mime: text for mime, text in output["data"].items()
            if mime in RESULT_MIMES and (text or mime == "text/plain")}
    if not data:
        return None
    # The value a cell ends with is its Out[n]; results shown before it are displays.
    if last:
        return v4.new_output("execute_result", data=data, execution_count=number)
    return v4.new_output("display_data", data=data)


def _error(traceback: str) -> nbformat.NotebookNode:
    lines = traceback.rstrip("\n").split("\n")
    found = EXCEPTION_LINE.match(lines[-1].strip())
    ename, evalue = (found.group(1), found.group(2) or "") if found else ("Error", lines[-1])
    return v4.new_output("error", ename=ename, evalue=evalue, traceback=lines)


def _image(output: dict, fetch: Fetch) -> nbformat.NotebookNode:
    found = SHA1_URL.match(output["url"])
    if not found:
        raise NotebookError(400, f"an image's url must be /blobs/<sha1>, not "
                                 f"{output['url'][:80]!r}")
    stored = fetch(found.group(1))
    if stored is None:
        return v4.new_output("display_data", data={
            "text/plain": f"[the image {output['url']} is no longer stored]"})
    mime, data = stored
    if mime == "image/svg+xml":  # a text type: nbformat keeps it as text
        return v4.new_output("display_data", data={mime: data.decode("utf-8", "replace")})
    metadata = {mime: {"width": output["width"]}} if output.get("width") else {}
    return v4.new_output("display_data", data={mime: base64.b64encode(data).decode()},
                         metadata=metadata)


def dumps(nb: nbformat.NotebookNode) -> str:
    """The .ipynb text, refused (as our own bug) unless it is valid nbformat 4."""
    nbformat.validate(nb)
    return nbformat.writes(nb, version=4)


def script(sheet: Worksheet) -> str:
    """The cells as a .sage/.py file in the percent format (Jupytext, VS Code,
    Spyder): ``# %%`` opens a code cell, ``# %% [markdown]`` a text cell,
    whose lines are comments."""
    parts = []
    for cell in sheet.cells:
        if cell.kind == "markdown":
            lines = cell.source.rstrip("\n").split("\n")
            parts.append("# %% [markdown]\n" + "\n".join(f"# {x}".rstrip() for x in lines))
        else:
            parts.append("# %%\n" + cell.source.rstrip("\n"))
    return "\n\n".join(parts) + "\n"


def shared(content: dict) -> str:
    """A permalink's cells (web/permalinks.py's stored form) as an .ipynb."""
    cells = [Cell(*markdown_or_code(c["code"])) for c in content["cells"]]
    return dumps(notebook(Worksheet(content.get("engine") or "sage", cells), lambda _: None))


# ------------------------------------------------------------------ import


def read(data: bytes) -> dict:
    """The cells of an .ipynb file, for the page; any other input is refused
    with a one-line NotebookError."""
    raw = _json(data)
    _check_version(raw)
    if len(raw["cells"]) > MAX_CELLS:
        raise NotebookError(413, f"the notebook has {len(raw['cells'])} cells; a worksheet "
                                 f"opens at most {MAX_CELLS}: split it in Jupyter first")
    _validate(raw)
    return {"language": _language(raw.get("metadata", {})),
            "cells": [_imported(c) for c in raw["cells"]]}


def _json(data: bytes) -> dict:
    if len(data) > MAX_BYTES:
        raise NotebookError(413, f"the file is {len(data) / 2**20:.1f} MB; a notebook opened "
                                 f"here is at most {MAX_BYTES >> 20} MB: clear its outputs "
                                 "in Jupyter first")
    try:
        raw = json.loads(data)
    except RecursionError:
        raise NotebookError(400, "not a notebook: its JSON is nested too deeply; "
                                 "choose an .ipynb file") from None
    except UnicodeDecodeError:
        raise NotebookError(400, "not a notebook: the file is not UTF-8 text; choose an "
                                 ".ipynb file") from None
    except ValueError as err:
        where = f" (line {err.lineno}, column {err.colno})" if hasattr(err, "lineno") else ""
        raise NotebookError(400, f"not a notebook: the file is not JSON{where}; choose an "
                                 ".ipynb file") from None
    if not isinstance(raw, dict) or "nbformat" not in raw:
        raise NotebookError(400, "not a notebook: the JSON has no 'nbformat' field; choose an "
                                 ".ipynb file saved by Jupyter")
    return raw


def _check_version(raw: dict) -> None:
    version = raw["nbformat"]
    if type(version) is not int or version != 4:
        hint = "open it in Jupyter and save it again, which writes nbformat 4" \
            if type(version) is int and version < 4 else "save it as nbformat 4"
        shown = version if type(version) is int else repr(version)[:20]
        raise NotebookError(400, f"the notebook is nbformat {shown}, not 4: {hint}")
    if not isinstance(raw.get("cells"), list):
        raise NotebookError(400, "not a valid nbformat 4 notebook: it has no list of 'cells'; "
                                 "choose an .ipynb file saved by Jupyter")


def _validate(raw: dict) -> None:
    # nbformat 4.5 wants cell ids, which older writers left out: nbformat's own
    # normalize() adds them, with a warning; the same here, without it.
    if isinstance(raw.get("nbformat_minor"), int) and raw["nbformat_minor"] >= 5:
        for cell in raw["cells"]:
            if isinstance(cell, dict) and "id" not in cell:
                cell["id"] = secrets.token_hex(4)
    try:
        nbformat.validate(nbformat.from_dict(raw))
    except nbformat.ValidationError as err:
        where = "/".join(str(p) for p in err.absolute_path) or "the top level"
        problem = str(err.message).split("\n", 1)[0][:160]
        raise NotebookError(400, f"not a valid nbformat 4 notebook: at {where}, {problem}; "
                                 "repair it in Jupyter or choose another file") from None


def _language(metadata: dict) -> str | None:
    spec = metadata.get("kernelspec") or {}
    info = metadata.get("language_info") or {}
    named = f"{spec.get('name', '')} {spec.get('language', '')} {info.get('name', '')}"
    return "sage" if "sage" in named.lower() else "python" if "python" in named.lower() else None


def _imported(cell: dict) -> dict:
    """{"type", "source", "code"}: ``code`` is the cell as a worksheet holds it
    today, a markdown cell being a code cell that starts with ``%md``."""
    source = cell["source"]
    text = "".join(source) if isinstance(source, list) else source  # both are nbformat 4
    kind = cell["cell_type"]
    if kind == "raw":  # no kind of its own here: kept visible, as text
        kind, text = "markdown", f"```\n{text}\n```"
    code = ("%md\n" + text if text else "%md") if kind == "markdown" else text
    return {"type": kind, "source": text, "code": code}
