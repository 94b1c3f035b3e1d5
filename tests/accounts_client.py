"""Signed-in clients for the account tests: the redirect dance without a
browser (requests follows the redirects and keeps the cookies, as a browser
does)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import requests

from tests.helpers import kill_everything_of
from tests.oidc_provider import Provider
from tests.web_client import WebProcess
from tests.worker_client import WorkerProcess, make_keys

OPEN: list[requests.Session] = []  # closed after each test (conftest.py)


def session() -> requests.Session:
    """A client (cookies kept) that is closed when the test ends."""
    client = requests.Session()
    OPEN.append(client)
    return client


def close_all() -> None:
    while OPEN:
        OPEN.pop().close()


def signed_in(web, provider_name: str = "campus") -> requests.Session:
    """A client that went through the whole redirect dance."""
    client = session()
    answer = client.get(f"{web.url}/signin/{provider_name}?next=/", timeout=10)
    assert answer.status_code == 200 and answer.url == f"{web.url}/"
    return client


def me(client: requests.Session, web) -> dict:
    return client.get(f"{web.url}/api/me", timeout=10).json()


@contextlib.contextmanager
def start_signin_stack(dsn: str, *extra: str):
    """What signin_stack yields, the frontend started with ``extra`` options;
    everything stopped and removed afterwards, also after a failure."""
    folder = Path(tempfile.mkdtemp(prefix="salvus-signin-", dir="/tmp"))
    os.chmod(folder, 0o755)
    worker = web = None
    try:
        with Provider() as provider:
            keys = make_keys(folder / "keys")
            worker = WorkerProcess(folder / "w0", "python", keys=keys)
            worker.wait_ready()
            (folder / "providers.json").write_text(json.dumps(provider.entries()))
            (folder / "secret").write_text(uuid.uuid4().hex + uuid.uuid4().hex + "\n")
            web = WebProcess(folder / "web", [("w0", worker.endpoint)], dsn,
                             "--providers-file", str(folder / "providers.json"),
                             "--secret-file", str(folder / "secret"), *extra, keys=keys)
            web.wait_ready()
            yield web, provider, dsn
    finally:
        if web:
            web.stop()
        if worker:
            worker.stop()
        kill_everything_of(folder)
        shutil.rmtree(folder, ignore_errors=True)
