"""HTML from sessions, made inert before it goes anywhere.

A session is stranger's code: the ``text/html`` of a result (Sage's
``html(...)``, a table's ``_repr_html_``) is whatever it chose to send, so
every one is cleaned here, where worker messages enter the frontend, before
a page or an API caller sees it. nh3 (ammonia's allow-list sanitizer) keeps
formatting, tables, links and images and drops scripts, event handlers,
styles that could overlay the page, forms and frames. The page's
Content-Security-Policy (no inline script) stands behind it.
"""

from __future__ import annotations

import nh3

# Links open elsewhere and tell the target nothing.
_LINK_ATTRIBUTES = {"rel": "noopener noreferrer nofollow", "target": "_blank"}


def sanitize(html: str) -> str:
    """``html`` with only inert markup left."""
    return nh3.clean(html, set_tag_attribute_values={"a": _LINK_ATTRIBUTES},
                     link_rel=None, url_schemes={"http", "https", "mailto"})


def clean_result(data: dict[str, str]) -> dict[str, str]:
    """A result's representations, its HTML sanitized."""
    if "text/html" in data:
        data = {**data, "text/html": sanitize(data["text/html"])}
    return data
