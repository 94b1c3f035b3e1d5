"""The config schema, its rendered file, and program planning (no processes)."""

from __future__ import annotations

import re

import pytest

from salvusctl import config as configfile
from salvusctl import programs
from salvusctl.datadir import DataDir
from salvusctl.errors import ConfigError, UnknownProgram


def test_rendered_config_reads_back_the_same(make_folder):
    path = make_folder() / "salvus.conf"
    raw = configfile.defaults({("web", "count"): "3", ("database", "dsn"): "dbname=x"})
    written = configfile.write(path, raw)
    loaded = configfile.load(path)
    for key in configfile.SCHEMA:
        assert loaded.get(key.section, key.name) == written.get(key.section, key.name)
    assert loaded.get("web", "count") == 3
    assert not loaded.embedded_db


@pytest.mark.parametrize("section, name, value, message", [
    ("web", "count", "0", "[web] count must be a whole number from 1 to 64"),
    ("worker", "port", "70000", "[worker] port must be a whole number from 1 to 65535"),
    ("salvus", "host", "a b", "[salvus] host must be letters"),
])
def test_bad_values_name_the_key_and_the_file(make_folder, section, name, value, message):
    path = make_folder() / "salvus.conf"
    configfile.write(path, configfile.defaults())
    # Put the bad value into the right section only.
    out, current = [], None
    for line in path.read_text().splitlines():
        if line.startswith("["):
            current = line.strip("[]")
        if current == section and line.startswith(f"{name} = "):
            line = f"{name} = {value}"
        out.append(line)
    path.write_text("\n".join(out) + "\n")
    with pytest.raises(ConfigError, match=re.escape(message)):
        configfile.load(path)


def test_unknown_keys_and_garbage_are_refused(make_folder):
    path = make_folder() / "salvus.conf"
    configfile.write(path, configfile.defaults())
    path.write_text(path.read_text() + "\n[web]\ncolour = blue\n")
    with pytest.raises(ConfigError):
        configfile.load(path)
    path.write_text("this is not ini\n")
    with pytest.raises(ConfigError, match="not a valid config file"):
        configfile.load(path)


def plan_for(make_folder, **overrides):
    raw = configfile.defaults({tuple(k.split("__")): str(v) for k, v in overrides.items()})
    config = configfile.validate(raw, "test")
    return programs.plan(DataDir(make_folder()), config, None)


def test_plan_names_every_program_in_start_order(make_folder):
    found = plan_for(make_folder, web__count=2, worker__count=3)
    assert [p.name for p in found] == ["postgres", "memcached", "registry", "shipper",
                                       "worker0", "worker1", "worker2", "web0", "web1"]
    # HTTP, then the bus publisher (bus_port itself is salvusctl message's)
    assert [p.ports for p in found if p.kind == "web"] == [(8080, 8481), (8081, 8482)]


def test_a_program_may_not_take_the_port_salvusctl_message_binds(make_folder):
    with pytest.raises(ConfigError, match="worker0 and salvusctl message would both use port 8180"):
        plan_for(make_folder, web__bus_port=8180)  # worker0's


def test_external_database_has_no_postgres_program(make_folder):
    found = plan_for(make_folder, database__dsn="host=db.example dbname=salvus")
    assert "postgres" not in [p.name for p in found]


def test_select_expands_kinds_and_keeps_start_order(make_folder):
    found = plan_for(make_folder, worker__count=2)
    chosen = programs.select(found, ("web0", "worker", "postgres"))
    assert [p.name for p in chosen] == ["postgres", "worker0", "worker1", "web0"]
    assert [p.name for p in programs.select(found, ("web", "memcached"))] == [
        "memcached", "web0"]
    with pytest.raises(UnknownProgram, match=r"'nope'.*postgres, memcached, registry"):
        programs.select(found, ("nope",))


def test_overlapping_ports_are_refused(make_folder):
    with pytest.raises(ConfigError, match="both use port 8100"):
        plan_for(make_folder, web__count=30, worker__port=8100)
