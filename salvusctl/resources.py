"""Find the files that ship beside the Python packages.

In a checkout (or an editable install) ``sql/``, ``etc/supervisord.d/`` and
``etc/systemd/`` sit next to the ``salvusctl`` package; an installed sdist or
wheel puts them under ``<prefix>/share/salvus`` (setup.cfg's data_files).
"""

from __future__ import annotations

import sys
from pathlib import Path

from salvusctl.errors import SalvusError

_CHECKOUT = Path(__file__).resolve().parent.parent


def _find(relative: str) -> Path:
    for base in (_CHECKOUT, Path(sys.prefix) / "share" / "salvus"):
        candidate = base / relative
        if candidate.is_dir():
            return candidate
    raise SalvusError(
        f"the installation is incomplete: folder {relative!r} was not found; reinstall salvus"
    )


def sql_dir() -> Path:
    return _find("sql")


def templates_dir() -> Path:
    return _find("etc/supervisord.d")


def systemd_templates_dir() -> Path:
    return _find("etc/systemd")
