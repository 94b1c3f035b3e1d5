from __future__ import annotations

import os
import shutil
import signal
import tempfile
import uuid
from pathlib import Path

import psycopg2
import pytest

from salvusctl import appliance, migrate, postgres
from salvusctl.datadir import DataDir
from salvusctl.resources import sql_dir
from tests.accounts_client import close_all, start_signin_stack
from tests.helpers import (
    free_base_port,
    kill_everything_of,
    processes_of_uid,
    run,
    started_appliance,
)
from tests.worker_client import UIDS, WorkerProcess


@pytest.fixture(autouse=True)
def _close_http_clients():
    """The account tests' HTTP clients hold pooled sockets: closed after each test."""
    yield
    close_all()


@pytest.fixture
def make_folder():
    """Temp folders under /tmp the service user can enter; removed afterwards,
    together with every process still running from them."""
    made: list[Path] = []

    def make(prefix: str = "salvus-test-") -> Path:
        path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        os.chmod(path, 0o755)
        made.append(path)
        return path

    yield make
    for path in made:
        kill_everything_of(path)
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def data_path(make_folder) -> Path:
    """A not-yet-created data folder path inside a fresh temp folder."""
    return make_folder() / "data"


@pytest.fixture
def initialized(make_folder) -> Path:
    """An initialized (not started) data folder on free ports."""
    data = make_folder() / "data"
    run(data, "init", "--base-port", str(free_base_port()))
    return data


@pytest.fixture(scope="session")
def pg_cluster():
    """A real PostgreSQL cluster made by salvusctl's own code, for database tests."""
    folder = Path(tempfile.mkdtemp(prefix="salvus-pg-", dir="/tmp"))
    os.chmod(folder, 0o755)
    data_path = folder / "data"
    try:
        base = free_base_port()
        appliance.init(data_path, {("database", "port"): base + 200}, False, lambda _: None)
        data = DataDir(data_path)
        config = data.load_config()
        with postgres.temporary_server(data, config, appliance.service_account(config)):
            yield data, config
    finally:
        kill_everything_of(folder)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def fresh_db(pg_cluster) -> str:
    """The DSN of a new, empty database; dropped after the test."""
    data, config = pg_cluster
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = postgres.connect(postgres.embedded_dsn(data, config, "postgres"))
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name}")
        yield postgres.embedded_dsn(data, config, name)
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE {name} WITH (FORCE)")
    finally:
        admin.close()


@pytest.fixture
def log_db(fresh_db) -> str:
    """A fresh database with the log table (the sql/logs/ series applied)."""
    conn = psycopg2.connect(fresh_db)
    try:
        migrate.migrate(conn, sql_dir() / "logs", ledger=migrate.LOG_LEDGER)
    finally:
        conn.close()
    return fresh_db


@pytest.fixture(scope="module")
def running():
    """One started appliance shared by a module's tests; stopped at the end."""
    with started_appliance("salvus-running-", "--workers", "2") as (data, _, _):
        yield data


@pytest.fixture
def worker_factory(make_folder):
    """Workers as processes (python engine unless asked), each in a folder of
    its own; stopped afterwards, and no session process may outlive them."""
    started: list[WorkerProcess] = []

    def make(*extra: str, engine: str = "python", ready: bool = True,
             **options) -> WorkerProcess:
        worker = WorkerProcess(make_folder("salvus-worker-"), engine, *extra, **options)
        started.append(worker)
        if ready:
            worker.wait_ready()
        return worker

    yield make
    for worker in started:
        worker.stop()
        uids = range(worker.uid_base(), worker.uid_base() + UIDS)
        leftovers = [pid for uid in uids for pid in processes_of_uid(uid)]
        for pid in leftovers:
            os.kill(pid, signal.SIGKILL)
        assert leftovers == [], "session processes outlived their worker"


def pytest_terminal_summary(terminalreporter) -> None:
    """The canary's figures during each attack of tests/test_hostile.py."""
    from tests import chaos

    if chaos.REPORT:
        terminalreporter.section("the canary (1+1 through the API) during each attack")
        for line in chaos.REPORT:
            terminalreporter.write_line(line)


@pytest.fixture(scope="module")
def chromium():
    """Debian's Chromium, headless, driven by Playwright (one per module)."""
    from playwright.sync_api import sync_playwright

    from tests.test_browser import CHROMIUM_ARGS

    executable = shutil.which("chromium")
    assert executable, "Debian's chromium is installed by `make test` (apt-get install chromium)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def migrated_db(pg_cluster):
    """A migrated database of the module's own."""
    data, config = pg_cluster
    name = f"accounts_{uuid.uuid4().hex[:10]}"
    admin = postgres.connect(postgres.embedded_dsn(data, config, "postgres"))
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    dsn = postgres.embedded_dsn(data, config, name)
    conn = psycopg2.connect(dsn)
    migrate.migrate(conn, sql_dir())
    conn.close()
    try:
        yield dsn
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE {name} WITH (FORCE)")
        admin.close()


@pytest.fixture(scope="module")
def signin_stack(migrated_db):
    """A frontend with sign-in (tests/oidc_provider.py as "campus" and "github"), a
    worker and a migrated database: (web, provider, dsn)."""
    with start_signin_stack(migrated_db) as stack:
        yield stack
