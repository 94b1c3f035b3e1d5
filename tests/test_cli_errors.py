"""Expected errors: one 'Error: ...' line naming problem and fix, right exit code."""

from __future__ import annotations

import socket

import pytest

from salvusctl import config as configfile
from tests.helpers import processes_of, run


def assert_one_line_error(result, code: int, *words: str) -> None:
    assert result.returncode == code, (result.stdout, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for word in words:
        assert word in errors[0], errors[0]


def test_help_lists_the_commands(data_path):
    result = run(data_path, "--help")
    for command in ("init", "start", "stop", "restart", "status", "check", "logs", "db"):
        assert f"  {command} " in result.stdout


@pytest.mark.parametrize("command", [["start"], ["stop"], ["status"], ["check"],
                                     ["restart", "web0"], ["db", "migrate"]])
def test_uninitialized_folder_is_named_with_the_fix(data_path, command):
    result = run(data_path, *command, check=False)
    assert_one_line_error(result, 4, str(data_path), "salvusctl init")


def test_second_init_changes_nothing_and_says_so(initialized):
    files = {p: p.read_bytes() for p in initialized.rglob("*.conf")}
    result = run(initialized, "init")
    assert "nothing changed" in result.stdout
    assert {p: p.read_bytes() for p in initialized.rglob("*.conf")} == files


def test_init_force_rerenders_from_the_edited_config(initialized):
    config = initialized / "salvus.conf"
    config.write_text(config.read_text().replace("count = 1", "count = 2", 1))
    assert not (initialized / "etc/supervisord.d/web1.conf").exists()
    result = run(initialized, "init", "--force")
    assert "database untouched" in result.stdout
    assert (initialized / "etc/supervisord.d/web1.conf").exists()


def test_every_rendered_key_is_documented(initialized):
    rendered = [initialized / "etc/supervisord.conf",
                *sorted((initialized / "etc/supervisord.d").glob("*.conf"))]
    assert len(rendered) == 7
    for path in rendered:
        text = path.read_text()
        assert "$" not in text, path
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if "=" not in line or line.startswith(";"):
                continue
            key = line.split("=")[0].strip()
            comments = [c for c in lines[max(0, i - 6):i] if c.startswith(";")]
            assert any(key.split(".")[-1] in c for c in comments), f"{path.name}: {key}"


def test_config_file_documents_every_key(initialized):
    lines = (initialized / "salvus.conf").read_text().splitlines()
    for i, line in enumerate(lines):
        if " = " in line and not line.startswith("#"):
            assert lines[i - 1].startswith("#"), f"undocumented key: {line}"


def test_bad_config_value_is_named(initialized):
    config = initialized / "salvus.conf"
    config.write_text(config.read_text().replace("count = 1", "count = lots", 1))
    result = run(initialized, "status", check=False)
    assert_one_line_error(result, 3, "[web] count", "lots", str(config))


def test_unknown_program_lists_the_real_ones(initialized):
    result = run(initialized, "status", "webz", check=False)
    assert_one_line_error(result, 11, "webz", "web0", "worker0")


def test_port_in_use_is_named_and_nothing_left_running(initialized):
    web_port = configfile.load(initialized / "salvus.conf").get("web", "port")
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", web_port))
        squatter.listen()
        result = run(initialized, "start", check=False)
    assert_one_line_error(result, 5, f"port {web_port}", "web0", "salvus.conf")
    assert processes_of(initialized) == {}


def test_init_refuses_a_non_empty_foreign_folder(make_folder):
    folder = make_folder()
    (folder / "precious.txt").write_text("keep me")
    result = run(folder, "init", check=False)
    assert_one_line_error(result, 3, "not empty")
    assert (folder / "precious.txt").read_text() == "keep me"


def test_failed_init_leaves_nothing_behind(data_path):
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", 0))
        port = squatter.getsockname()[1]
        squatter.listen()
        result = run(data_path, "init", "--base-port", str(port - 200), check=False)
    assert_one_line_error(result, 5, f"port {port}")
    assert not data_path.exists()


def test_program_that_fails_to_start_is_reported_with_its_log(initialized, make_folder):
    # A frontend whose code crashes on import: a 'web' package earlier on the
    # path, which supervisord's programs inherit through PYTHONPATH.
    broken = make_folder()
    (broken / "web").mkdir()
    (broken / "web" / "__init__.py").write_text("raise SystemExit('this frontend is broken')")
    (broken / "web" / "__main__.py").write_text("")
    result = run(initialized, "start", check=False, env={"PYTHONPATH": str(broken)})
    try:
        assert_one_line_error(result, 10, "web0", "web0.log", "salvusctl start web0")
        assert "last lines of" in result.stdout
        assert "this frontend is broken" in result.stdout
    finally:
        run(initialized, "stop", check=False)
    assert processes_of(initialized) == {}


def test_missing_postgresql_binaries_are_named_with_the_fix(make_folder, monkeypatch):
    empty = make_folder()
    monkeypatch.setenv("SALVUS_PG_BINDIR", str(empty))
    data = make_folder() / "data"
    result = run(data, "init", check=False)
    assert_one_line_error(result, 6, "PostgreSQL server binaries", "apt-get install postgresql")
    assert not data.exists()


def test_restart_without_supervisord_says_to_start(initialized):
    result = run(initialized, "restart", "worker0", check=False)
    assert_one_line_error(result, 1, "not running", "salvusctl start")


def test_check_without_database_says_how_to_start_it(initialized):
    result = run(initialized, "check", check=False)
    assert_one_line_error(result, 7, "database is not running", "salvusctl start postgres")


def test_start_applies_an_edited_config_without_init_force(initialized):
    config = initialized / "salvus.conf"
    text = config.read_text().replace("count = 1", "count = 2", 1)  # [web] count
    config.write_text(text.replace("enabled = yes", "enabled = no"))  # [memcached]
    try:
        result = run(initialized, "start")
        assert "updated" in result.stdout and "supervisord files" in result.stdout
        names = [line.split()[0] for line in run(initialized, "status").stdout.splitlines()]
        assert "web1" in names and "memcached" not in names
        assert not (initialized / "etc/supervisord.d/memcached.conf").exists()
        again = run(initialized, "start")
        assert "updated" not in again.stdout
    finally:
        run(initialized, "stop", check=False)


def test_a_bind_address_not_on_this_host_is_named(initialized):
    config = initialized / "salvus.conf"
    config.write_text(config.read_text().replace("bind = 127.0.0.1", "bind = 192.0.2.1"))
    result = run(initialized, "start", check=False)
    assert_one_line_error(result, 3, "192.0.2.1", "not an address of this host",
                          "[salvus] bind")
    assert processes_of(initialized) == {}
