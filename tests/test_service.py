"""salvusctl install-service: the systemd unit that starts the appliance at boot."""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from salvusctl import config as configfile
from salvusctl import service
from salvusctl.datadir import DataDir
from salvusctl.errors import SalvusError
from tests.helpers import run
from tests.test_cli_errors import assert_one_line_error

ROOT = Path(__file__).resolve().parent.parent
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


@pytest.fixture
def configured(make_folder) -> Path:
    """A data folder with its salvus.conf only: all the unit is rendered from."""
    data = make_folder() / "data"
    data.mkdir()
    configfile.write(data / "salvus.conf", configfile.defaults())
    return data


def loaded(data: Path) -> tuple[DataDir, configfile.Config]:
    folder = DataDir(data)
    return folder, folder.load_config()


def keys(unit: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in unit.splitlines()
                if "=" in line and not line.startswith("#"))


def assert_every_key_documented(unit: str) -> None:
    """Each Key= line is named in the comment lines right before it (like the
    supervisord files: test_cli_errors.py::test_every_rendered_key_is_documented)."""
    lines = unit.splitlines()
    found = 0
    for i, line in enumerate(lines):
        if not line or line.startswith(("#", "[")):
            continue
        assert "=" in line, line
        key = line.split("=", 1)[0]
        before = []
        for previous in reversed(lines[:i]):
            if not previous.startswith("#"):
                if "=" in previous and not previous.startswith("["):
                    continue  # a key of the same comment (After= then Wants=)
                break
            before.append(previous)
        assert any(key in comment for comment in before), f"{key} is not documented"
        found += 1
    assert found >= 15


def verify(unit_file: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([ANALYZE, *options, "verify", str(unit_file)], capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL, check=False)


def complaints(result: subprocess.CompletedProcess, unit_file: Path) -> list[str]:
    """What systemd-analyze says about the unit itself (not about the host's
    other units, which a container may lack)."""
    return [line for line in (result.stdout + result.stderr).splitlines()
            if unit_file.name in line]


def test_print_renders_a_forking_unit_that_runs_this_salvusctl(configured):
    result = run(configured, "install-service", "--print")
    unit = result.stdout
    _, config = loaded(configured)
    instance = config.get("salvus", "instance")
    assert f"salvus-{instance}.service" in unit.splitlines()[0]
    assert "$" not in unit.replace("$$", "")
    found = keys(unit)
    salvusctl = str(Path(sys.executable).parent / "salvusctl")
    assert found["ExecStart"] == f"{salvusctl} --data {configured} start"
    assert found["ExecStop"] == f"{salvusctl} --data {configured} stop"
    assert found["Type"] == "forking"
    assert found["PIDFile"] == str(configured / "run/supervisord.pid")
    assert found["After"] == "network-online.target"
    assert found["Restart"] == "on-failure"
    assert found["WantedBy"] == "multi-user.target"
    assert int(found["TimeoutStartSec"]) > 60 + 60 + 120  # start waits up to that long
    # supervisord's own pid file is the one the unit names.
    rendered = (ROOT / "etc/supervisord.d/supervisord.conf.in").read_text()
    assert "pidfile = ${pidfile}" in rendered
    assert_every_key_documented(unit)
    assert not list(configured.parent.rglob("*.service"))  # --print writes nothing


def test_external_database_orders_the_unit_after_the_hosts_postgresql(configured):
    from tests.helpers import edit_config

    edit_config(configured, {("database", "dsn"): "host=/run/postgresql dbname=salvus"})
    unit = run(configured, "install-service", "--print").stdout
    assert keys(unit)["After"] == "network-online.target postgresql.service"
    assert "Wants=network-online.target" in unit.splitlines()
    assert_every_key_documented(unit)


@needs_analyze
def test_systemd_analyze_finds_nothing_wrong_with_the_unit(configured, make_folder):
    unit = run(configured, "install-service", "--print").stdout
    _, config = loaded(configured)
    folder = make_folder()
    good = folder / service.unit_name(config)
    good.write_text(unit)
    result = verify(good)
    assert result.returncode == 0, result.stderr
    assert complaints(result, good) == []
    # The check can fail: a misspelt value and an unknown key are reported.
    bad = folder / "salvus-broken.service"
    bad.write_text(unit.replace("Type=forking", "Type=forkin").replace(
        "TasksMax=infinity", "TasksMax=infinity\nTaskMax=1"))
    said = "\n".join(complaints(verify(bad), bad))
    assert "forkin" in said and "Unknown key 'TaskMax'" in said


@needs_analyze
def test_user_unit_waits_for_no_system_unit_and_verifies(configured, make_folder):
    unit = run(configured, "install-service", "--user-unit", "--print").stdout
    found = keys(unit)
    assert "After" not in found and "Wants" not in found
    assert found["WantedBy"] == "default.target"
    assert "user unit" in unit.splitlines()[1]
    assert "loginctl enable-linger" in unit
    assert_every_key_documented(unit)
    path = make_folder() / "salvus-user.service"
    path.write_text(unit)
    result = verify(path)
    assert result.returncode == 0 and complaints(result, path) == [], result.stderr


@needs_analyze
def test_a_data_path_with_blanks_and_percent_signs_is_quoted(make_folder):
    data = make_folder() / "odd 100% data"
    data.mkdir()
    configfile.write(data / "salvus.conf", configfile.defaults())
    folder, config = loaded(data)
    unit = service.render(folder, config)
    found = keys(unit)
    assert f'--data "{str(data).replace("%", "%%")}" start' in found["ExecStart"]
    assert found["PIDFile"] == str(data / "run/supervisord.pid").replace("%", "%%")
    path = make_folder() / "salvus-odd.service"
    path.write_text(unit)
    result = verify(path)
    assert result.returncode == 0 and complaints(result, path) == [], result.stderr


def test_pg_bindir_chosen_at_install_goes_into_the_unit(configured):
    folder, config = loaded(configured)
    unit = service.render(folder, config, environ={"SALVUS_PG_BINDIR": "/opt/pg 16/bin"})
    assert keys(unit)["Environment"] == '"SALVUS_PG_BINDIR=/opt/pg 16/bin"'
    assert_every_key_documented(unit)
    assert "Environment" not in keys(service.render(folder, config, environ={}))


def never_called(*argv, **options):
    raise AssertionError(f"systemctl must not run here: {argv}")


def test_install_without_systemd_writes_the_unit_and_says_why_it_is_not_enabled(
        configured, make_folder):
    folder, config = loaded(configured)
    root = make_folder()
    said: list[str] = []
    installed = service.install(folder, config, said.append, root=root, run=never_called,
                                is_root=True)
    path = root / "etc/systemd/system" / service.unit_name(config)
    assert installed == service.Installed(path, changed=True, enabled=False)
    assert path.read_text() == service.render(folder, config)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert said[0] == f"wrote {path}"
    assert "systemd is not running here" in said[1] and "/run/systemd/system" in said[1]
    assert f"systemctl enable {service.unit_name(config)}" in said[1]
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file left


def test_install_with_systemd_reloads_and_enables_it_once(configured, make_folder):
    folder, config = loaded(configured)
    root = make_folder()
    (root / "run/systemd/system").mkdir(parents=True)
    calls: list[list[str]] = []

    def systemctl(argv, **options):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, "", "")

    said: list[str] = []
    name = service.unit_name(config)
    assert service.install(folder, config, said.append, root=root, run=systemctl,
                           is_root=True).enabled
    assert calls == [["systemctl", "daemon-reload"], ["systemctl", "enable", name]]
    assert said[-1].startswith(f"enabled {name}")
    again = service.install(folder, config, said.append, root=root, run=systemctl,
                            is_root=True)
    assert not again.changed and said[-2] == f"unchanged: {again.path}"


def test_user_unit_goes_to_the_users_systemd_folder(configured, make_folder):
    folder, config = loaded(configured)
    home, root = make_folder(), make_folder()
    (root / "run/systemd/system").mkdir(parents=True)
    calls: list[list[str]] = []

    def systemctl(argv, **options):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, "", "")

    installed = service.install(folder, config, lambda _: None, user_unit=True, root=root,
                                home=home, run=systemctl, is_root=False)
    assert installed.path == home / ".config/systemd/user" / service.unit_name(config)
    assert "WantedBy=default.target" in installed.path.read_text()
    assert calls[1] == ["systemctl", "--user", "enable", service.unit_name(config)]
    assert not (root / "etc").exists()


def test_a_failing_systemctl_is_one_clear_error(configured, make_folder):
    folder, config = loaded(configured)
    root = make_folder()
    (root / "run/systemd/system").mkdir(parents=True)

    def systemctl(argv, **options):
        failed = "enable" in argv
        return subprocess.CompletedProcess(argv, int(failed), "",
                                           "Failed to enable unit: Access denied\n"
                                           if failed else "")

    with pytest.raises(SalvusError) as caught:
        service.install(folder, config, lambda _: None, root=root, run=systemctl,
                        is_root=True)
    message = caught.value.message
    assert "systemctl enable" in message and "Access denied" in message
    assert "\n" not in message
    assert (root / "etc/systemd/system" / service.unit_name(config)).exists()


def test_system_unit_takes_root(configured, make_folder):
    folder, config = loaded(configured)
    root = make_folder()
    with pytest.raises(SalvusError) as caught:
        service.install(folder, config, lambda _: None, root=root, run=never_called,
                        is_root=False)
    assert "takes root" in caught.value.message and "--print" in caught.value.message
    assert list(root.iterdir()) == []


def test_uninitialized_folder_is_named_with_the_fix(data_path):
    result = run(data_path, "install-service", "--print", check=False)
    assert_one_line_error(result, 4, str(data_path), "salvusctl init")
