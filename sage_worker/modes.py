"""Cell modes: a first line ``%md``, ``%html``, ``%latex`` or ``%python`` says
what the rest of the cell is, as in the Sage notebook.

- ``%md``: Markdown (CommonMark with tables and strikethrough, by
  markdown-it-py), shown as HTML;
- ``%html``: HTML as written;
- ``%latex``: LaTeX, typeset in the page;
- ``%python``: plain Python in a Sage worksheet (no preparser: ``2^3`` is 1).

HTML from here is as untrusted as anything a session sends: the frontend
sanitizes every result's HTML (web/html.py).
"""

from __future__ import annotations

MODES = ("md", "html", "latex", "python")
LINE_MAGICS = ("display",)  # a first line that is not a mode but a magic: fine


class UnknownMode(Exception):
    pass


def split(code: str) -> tuple[str | None, str]:
    """(mode, the rest of the cell), or (None, code) when the cell has none."""
    first, _, rest = code.partition("\n")
    word = first.strip()
    if not word.startswith("%") or word.startswith("%%"):
        return None, code
    name = word[1:].split()[0] if len(word) > 1 else ""
    if name in MODES and word == f"%{name}":
        return name, rest
    if name in LINE_MAGICS:
        return None, code
    raise UnknownMode(f"unknown cell mode {word.split()[0]}: a cell may start with "
                      f"{', '.join('%' + m for m in MODES)} (or use %display)")


def markdown_html(text: str) -> str:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": True}).enable(
        ["table", "strikethrough"]).render(text)


def result(mode: str, body: str) -> dict[str, str]:
    """What a %md, %html or %latex cell shows."""
    if mode == "md":
        return {"text/plain": body, "text/html": markdown_html(body)}
    if mode == "html":
        return {"text/plain": body, "text/html": body}
    return {"text/plain": body, "text/latex": body}
