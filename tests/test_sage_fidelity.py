"""Sage fidelity in CI: a sample of the installed Sage's own doctest examples,
run natively and through a real Sage worker (bench/sage_fidelity.py; `make
bench` runs every group in full). Every example that passes natively must
pass in a session, or be one of the listed, reasoned differences."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from bench import sage_fidelity

pytestmark = pytest.mark.timeout(900)


@pytest.mark.parametrize("group, limit", [("calculus", 120), ("integers", 120),
                                          ("plotting", 60)])
def test_sages_own_examples_show_as_sage_shows_them(group, limit):
    folder = Path(tempfile.mkdtemp(prefix="salvus-fidelity-"))
    try:
        report = sage_fidelity.fidelity(group, limit, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    counted, passed = report["pass_natively"], report["pass_in_salvus"]
    print(f"{group}: {passed}/{counted} of the examples that pass natively "
          f"({report['examples']} taken)")
    assert counted >= limit // 2  # the sample is real: most examples count
    assert report["differences"] == []
