"""First load of the worksheet beside Jupyter Lab's and Jupyter Notebook's own,
in headless Chromium (Debian's, through Playwright), on this machine, in one
run: the time from asking for the page to the first cell's editor showing a
typed key, with an empty cache (cold) and a primed one (warm), over loopback
and throttled to 3G (Chrome DevTools' preset through CDP's
Network.emulateNetworkConditions: 1.6 Mbps down, 750 kbps up, 150 ms round
trip), and the bytes a cold visit moves. Each product runs alone: its servers
start before its visits and stop after them.

Salvus: one frontend and one python worker (the page waits for its session
before it shows the first cell, so the figure includes that). Jupyter: `jupyter
lab` and `jupyter notebook` (`python -m jupyterlab` / `-m notebook`, as
bench/web_bench.py starts jupyter_server) opening a notebook of one empty code
cell, a new file each visit; their kernels are shut down between visits.

Prints a table with ratios and writes bench/results/first_load.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from playwright.sync_api import Browser, sync_playwright

from bench.common import RESULTS
from tests.helpers import terminate
from tests.page_load import JUPYTER, SALVUS, THREE_G, Editor, Visit, launch, visit
from tests.web_client import WebProcess, free_port
from tests.worker_client import WorkerProcess, make_keys

PRODUCTS = ("salvus", "jupyterlab", "notebook")
NOTEBOOK = {"cells": [{"cell_type": "code", "execution_count": None, "id": "first",
                       "metadata": {}, "outputs": [], "source": ""}],
            "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                        "name": "python3"}},
            "nbformat": 4, "nbformat_minor": 5}


class Target:
    """A product being measured: where its n-th visit goes, what to tidy after."""

    def __init__(self, editor: Editor, url_of: Callable[[int], str],
                 tidy: Callable[[], None] = lambda: None):
        self.editor, self.url_of, self.tidy = editor, url_of, tidy


@contextmanager
def salvus(folder: Path) -> Iterator[Target]:
    keys = make_keys(folder / "keys")
    worker = WorkerProcess(folder / "w0", "python", "--max-sessions", "200", uids=208,
                           keys=keys)
    web = None
    try:
        worker.wait_ready()
        web = WebProcess(folder / "web", [("w0", worker.endpoint)], None,
                         "--sessions-per-browser", "10000", "--sessions-per-ip", "10000",
                         keys=keys)
        web.wait_ready()
        yield Target(SALVUS, lambda _: web.url + "/")
    finally:
        if web:
            web.stop()
        worker.stop()


class Jupyter:
    """``python -m jupyterlab`` or ``-m notebook`` on loopback, with no token
    (so no login redirect to time), its config and workspaces in ``folder``."""

    def __init__(self, folder: Path, module: str):
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "JUPYTER_CONFIG_DIR": str(folder / "config"),
               "JUPYTER_RUNTIME_DIR": str(folder / "runtime"),
               "JUPYTERLAB_SETTINGS_DIR": str(folder / "settings"),
               "JUPYTERLAB_WORKSPACES_DIR": str(folder / "workspaces")}
        self.log = open(folder / f"{module}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, "--no-browser", f"--port={self.port}",
             "--ip=127.0.0.1", "--allow-root", "--IdentityProvider.token=",
             "--ServerApp.disable_check_xsrf=True",  # the bench's own DELETEs
             f"--ServerApp.root_dir={folder}"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                self.api("GET", "/api/status")
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{module} did not start: see {self.log.name}")

    def api(self, method: str, path: str) -> list | dict:
        request = urllib.request.Request(self.url + path, method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"{}")

    def notebook(self, n: int) -> str:
        name = f"visit{n}.ipynb"
        (self.folder / name).write_text(json.dumps(NOTEBOOK))
        return name

    def tidy(self) -> None:
        """No kernel of an earlier visit runs, no tab of it is restored."""
        for session in self.api("GET", "/api/sessions"):
            self.api("DELETE", f"/api/sessions/{session['id']}")
        shutil.rmtree(self.folder / "workspaces", ignore_errors=True)

    def stop(self) -> None:
        terminate(self.proc, timeout=20)
        self.log.close()


@contextmanager
def jupyter(folder: Path, module: str) -> Iterator[Target]:
    server = Jupyter(folder, module)
    page = "/lab/tree/" if module == "jupyterlab" else "/notebooks/"
    try:
        yield Target(JUPYTER, lambda n: server.url + page + server.notebook(n),
                     server.tidy)
    finally:
        server.stop()


def measure(browser: Browser, target: Target, runs: int, slow_runs: int) -> dict:
    """Cold and warm visits over loopback, then throttled to 3G."""
    count = iter(range(10**6))

    def one(context, network=None) -> Visit:
        try:
            return visit(context, target.url_of(next(count)), target.editor, network,
                         timeout=300)
        finally:
            target.tidy()

    def cold(n: int, network=None) -> list[Visit]:
        visits = []
        for _ in range(n):
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            try:
                visits.append(one(context, network))
            finally:
                context.close()
        return visits

    def warm(n: int, network=None) -> list[Visit]:
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        try:
            one(context)  # primes the cache
            return [one(context, network) for _ in range(n)]
        finally:
            context.close()

    one_cold = cold(1)  # the servers' own first request warms them: not counted
    del one_cold
    return {"cold": cold(runs), "warm": warm(runs), "3g_cold": cold(slow_runs, THREE_G),
            "3g_warm": warm(slow_runs, THREE_G)}


def summary(visits: dict[str, list[Visit]]) -> dict:
    figures = {f"{profile}_s": statistics.median(v.seconds for v in runs)
               for profile, runs in visits.items()}
    cold = visits["cold"]
    figures["cold_kb"] = statistics.median(v.wire_bytes for v in cold) / 1000
    figures["warm_kb"] = statistics.median(v.wire_bytes for v in visits["warm"]) / 1000
    figures["cold_requests"] = statistics.median(len(v.responses) for v in cold)
    figures["runs"] = {profile: [round(v.seconds, 3) for v in runs]
                       for profile, runs in visits.items()}
    return figures


ROWS = [("cold: time to a usable editor", "cold_s", "s"),
        ("warm: time to a usable editor", "warm_s", "s"),
        ("3G cold: time to a usable editor", "3g_cold_s", "s"),
        ("3G warm: time to a usable editor", "3g_warm_s", "s"),
        ("cold: bytes on the wire", "cold_kb", "KB"),
        ("warm: bytes on the wire", "warm_kb", "KB"),
        ("cold: responses", "cold_requests", "")]


def table(results: dict[str, dict]) -> list[dict]:
    rows = []
    print(f"\n{'first load (median)':<36} {'salvus':>9} {'jupyterlab':>11} {'notebook':>9}"
          f" {'lab/salvus':>11} {'nb/salvus':>10}  unit")
    for metric, key, unit in ROWS:
        ours, lab, nb = (results[p][key] for p in PRODUCTS)
        row = {"metric": metric, "unit": unit, "salvus": ours, "jupyterlab": lab,
               "notebook": nb, "jupyterlab_ratio": lab / ours if ours else None,
               "notebook_ratio": nb / ours if ours else None}
        rows.append(row)
        ratios = "".join(f" {r:>10.1f}x" if r is not None else f" {'-':>11}"
                         for r in (row["jupyterlab_ratio"], row["notebook_ratio"]))
        print(f"{metric:<36} {ours:>9.3f} {lab:>11.3f} {nb:>9.3f}{ratios}  {unit}")
    print("ratio: Jupyter's figure over Salvus's (how many times more time or bytes)")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="visits per loopback profile")
    parser.add_argument("--slow-runs", type=int, default=3, help="visits per 3G profile")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="salvus-firstload-"))
    os.chmod(folder, 0o755)
    results = {}
    try:
        with sync_playwright() as playwright:
            browser = launch(playwright)
            try:
                for product in PRODUCTS:
                    place = folder / product
                    place.mkdir()
                    started = salvus(place) if product == "salvus" else jupyter(place, product)
                    with started as target:
                        results[product] = summary(measure(browser, target, args.runs,
                                                           args.slow_runs))
                    print(f"{product}: {json.dumps(results[product]['runs'])}", flush=True)
            finally:
                browser.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    rows = table(results)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "first_load.json"
    path.write_text(json.dumps({"rows": rows, "products": results, "throttle_3g": THREE_G,
                                "runs": args.runs, "slow_runs": args.slow_runs},
                               indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
