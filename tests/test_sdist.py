"""What a packager ships: the sdist installs in a fresh venv and runs."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.helpers import free_base_port, processes_of, run

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def sh(*argv, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 0, f"{argv}\n{result.stdout}\n{result.stderr}"
    return result


def test_sdist_installs_in_a_fresh_venv_and_runs(make_folder):
    work = make_folder("salvus-sdist-")
    sh(sys.executable, "-m", "build", "--sdist", "--outdir", str(work / "dist"), str(ROOT))
    [tarball] = (work / "dist").glob("salvus-*.tar.gz")
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    top = names[0].split("/")[0]
    for needed in ("sql/001_components.sql", "etc/supervisord.d/web.conf.in",
                   "web/static/index.html", "README.md", "setup.cfg",
                   "sql/logs/001_log.sql", "etc/systemd/salvus.service.in"):
        assert f"{top}/{needed}" in names, needed

    venv = work / "venv"
    sh(sys.executable, "-m", "venv", str(venv))
    sh(str(venv / "bin/pip"), "install", "-q", str(tarball))
    salvusctl = [str(venv / "bin/salvusctl")]
    data = work / "data"
    try:
        # Run from elsewhere so nothing can come from the checkout.
        run(data, "init", "--base-port", str(free_base_port()), salvusctl=salvusctl)
        assert str(venv) in (data / "etc/supervisord.d/web0.conf").read_text()
        run(data, "start", salvusctl=salvusctl)
        status = run(data, "status", salvusctl=salvusctl)
        assert len(status.stdout.splitlines()) == 6  # with the shipper
        assert all(" RUNNING " in line for line in status.stdout.splitlines())
        # The systemd unit's template came along too (<prefix>/share/salvus).
        unit = run(data, "install-service", "--print", salvusctl=salvusctl).stdout
        assert f"ExecStart={venv}/bin/salvusctl --data {data} start" in unit
    finally:
        run(data, "stop", salvusctl=salvusctl, check=False)
    assert processes_of(data) == {}
