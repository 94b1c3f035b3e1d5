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


def sanitize(html: str) -> str:
    """``html`` with only inert markup left. Links open elsewhere and tell the
    target nothing (one attribute through each option: nh3 orders several
    set through one option differently from run to run)."""
    return nh3.clean(html, set_tag_attribute_values={"a": {"target": "_blank"}},
                     link_rel="noopener noreferrer nofollow",
                     url_schemes={"http", "https", "mailto"})


def clean_result(data: dict[str, str]) -> dict[str, str]:
    """A result's representations, its HTML sanitized."""
    if "text/html" in data:
        data = {**data, "text/html": sanitize(data["text/html"])}
    return data
