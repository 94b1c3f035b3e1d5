"""One config, several hosts: who runs what, where it listens, which uids and
which database address each host gets, and the errors that name the fix.
Rendering only; tests/test_many_hosts.py runs it all."""

from __future__ import annotations

import json

import pytest

from salvusctl import access, postgres, programs, topology, uids
from salvusctl import config as configfile
from salvusctl.appliance import adopt
from salvusctl.cli import cli
from salvusctl.datadir import DataDir
from salvusctl.errors import ConfigError

HOSTS = "a=10.9.0.1 b=10.9.0.2 c=10.9.0.3"


def configured(host: str | None, **keys: str) -> configfile.Config:
    raw = configfile.defaults({("salvus", "hosts"): HOSTS, ("worker", "uid_base"): "70000",
                               **{tuple(k.split("__")): v for k, v in keys.items()}})
    return topology.on_host(configfile.validate(raw, "test"), host)


def test_programs_are_numbered_across_the_hosts_that_run_them():
    config = configured("b", web__hosts="a b", web__count="2", worker__hosts="c b",
                        haproxy__hosts="c")
    top = config.topology
    assert top.several and top.this == "b" and top.address == "10.9.0.2"
    assert list(top.indices("web")) == [2, 3] and list(top.indices("web", "a")) == [0, 1]
    assert list(top.indices("worker")) == [1] and top.host_of("worker", 0) == "c"
    assert top.indices("haproxy") == range(0) and top.database == "a"
    # This host's view: its own name, listening on its own address.
    assert config.get("salvus", "host") == "b" and config.get("salvus", "bind") == "10.9.0.2"


def test_each_host_renders_its_share_and_lists_everyone_s(make_folder):
    data = DataDir(make_folder() / "data")
    data.secrets.mkdir(parents=True)
    data.etc.mkdir()
    access.ensure_keys(data)
    config = configured("b", web__hosts="a b", worker__hosts="c")
    ours = programs.plan(data, config, None)
    assert [p.name for p in ours] == ["memcached", "registry", "shipper", "web1"]
    everything = programs.everywhere(data, config, None)
    assert {(p.host, p.name) for p in everything} >= {
        ("a", "postgres"), ("a", "web0"), ("c", "worker0"), ("c", "registry")}
    assert not any(p.kind == "memcached" and p.host == "c" for p in everything)
    files = programs.rendered(data, config, None)
    assert sorted(p.name for p in files if p.parent == data.programs_dir) == \
        ["memcached.conf", "registry.conf", "shipper.conf", "web1.conf"]
    workers = json.loads(files[data.workers_file])
    assert [(w["name"], w["endpoint"]) for w in workers] == [("worker0", "tcp://10.9.0.3:8180")]
    frontends = json.loads(files[data.frontends_file])["frontends"]
    assert [f["http"] for f in frontends] == ["http://10.9.0.1:8080/", "http://10.9.0.2:8081/"]
    web1 = files[data.programs_dir / "web1.conf"]
    assert "--bus-bind tcp://10.9.0.2:8482" in web1
    assert "SALVUS_HOST=\"b\"" in files[data.supervisord_conf]


def test_haproxies_on_two_hosts_front_every_frontend_and_trust_only_each_other():
    config = configured("c", haproxy__enabled="yes", haproxy__hosts="b c",
                        web__hosts="a", haproxy__https_port="9443")
    assert programs.haproxy_urls(config) == ["https://10.9.0.2:9443/", "https://10.9.0.3:9444/"]
    assert programs.haproxy_sources(config) == ["10.9.0.2", "10.9.0.3"]
    assert programs.public_hosts(config) == ["10.9.0.2", "10.9.0.3"]


def test_session_uids_are_disjoint_per_host_and_span_them_all():
    shares = [uids.needed(configured(h, worker__max_sessions="8", worker__spares="2"))
              for h in ("a", "b", "c")]
    assert shares == [range(70000, 70010), range(70010, 70020), range(70020, 70030)]
    assert uids.span(configured("a", worker__max_sessions="8", worker__spares="2")) == 30
    assert uids.needed(configured("a", worker__hosts="b")) == range(70000, 70000)


def test_the_other_hosts_reach_the_database_over_tls(make_folder):
    data = DataDir(make_folder() / "data")
    here = postgres.embedded_dsn(data, configured("a"))
    there = postgres.embedded_dsn(data, configured("b"))
    assert here.startswith(f"host={data.pg_run(configured('a'))} ")
    assert "host=10.9.0.1 " in there and "sslmode=require" in there
    args = postgres.server_args(data, configured("a"))
    assert "listen_addresses=10.9.0.1" in args and "ssl=on" in args


@pytest.mark.parametrize(("keys", "message"), [
    ({"web__hosts": "a z"}, r"\[web\] hosts names 'z', which is not in \[salvus\] hosts"),
    ({"database__host": "q"}, r"\[database\] host names 'q'"),
])
def test_a_host_not_listed_is_named_with_its_key(keys, message):
    with pytest.raises(ConfigError, match=message):
        configured("a", **keys)


def test_bad_hosts_values_are_refused_by_the_schema():
    for text in ("a", "a=", "a=1 a=2", "a=[::1]"):
        with pytest.raises(ConfigError, match=r"\[salvus\] hosts"):
            configfile.validate(configfile.defaults({("salvus", "hosts"): text}), "test")


def test_a_folder_must_know_its_host(make_folder):
    with pytest.raises(ConfigError, match="run `salvusctl init --host NAME`"):
        configured(None)
    with pytest.raises(ConfigError, match="this data folder's host"):
        configured("zz")


def test_adopting_a_copy_without_its_secrets_names_what_to_copy(make_folder):
    data = DataDir(make_folder() / "data")
    data.root.mkdir()
    configfile.write(data.config_file, configfile.defaults({("salvus", "hosts"): HOSTS}))
    with pytest.raises(ConfigError, match="copy secrets/ from the first host"):
        adopt(data, "b", print)
    data.host_file.write_text("a\n")
    with pytest.raises(ConfigError, match="is host a's data folder"):
        adopt(data, "b", print)


def test_init_options_name_their_own_mistakes(make_folder):
    from click.testing import CliRunner

    folder = make_folder()
    runner = CliRunner()
    said = runner.invoke(cli, ["--data", str(folder / "d"), "init", "--set", "web.count"])
    assert said.exit_code == 2 and "is not SECTION.KEY=VALUE" in said.output
    said = runner.invoke(cli, ["--data", str(folder / "d"), "init", "--set",
                               f"salvus.hosts={HOSTS}"])
    assert said.exit_code != 0
    assert "say which one this is with `salvusctl init --host NAME`" in said.output
    assert not (folder / "d").exists()


def test_with_its_own_postgresql_no_host_runs_one(make_folder):
    data = DataDir(make_folder() / "data")
    data.secrets.mkdir(parents=True)
    data.etc.mkdir()
    access.ensure_keys(data)
    config = configured("a", database__dsn="host=pg.example dbname=salvus sslmode=verify-full")
    assert config.topology.database is None
    assert not any(p.kind == "postgres" for p in programs.everywhere(data, config, None))
    assert postgres.dsn(data, config) == "host=pg.example dbname=salvus sslmode=verify-full"
