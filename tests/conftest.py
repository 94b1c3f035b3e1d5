from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

from salvusctl import appliance, postgres
from salvusctl.datadir import DataDir
from tests.helpers import free_base_port, kill_everything_of, run


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


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    """One started appliance shared by a module's tests; stopped at the end."""
    folder = Path(tempfile.mkdtemp(prefix="salvus-running-", dir="/tmp"))
    os.chmod(folder, 0o755)
    data = folder / "data"
    try:
        run(data, "init", "--base-port", str(free_base_port()), "--workers", "2")
        run(data, "start")
        yield data
    finally:
        if (data / "salvus.conf").exists():
            run(data, "stop", check=False)
        kill_everything_of(folder)
        shutil.rmtree(folder, ignore_errors=True)
