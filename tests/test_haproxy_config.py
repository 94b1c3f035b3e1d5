"""haproxy's rendered config on its own: haproxy itself checks it (-c), with
a certificate made by salvusctl's own code. No appliance runs."""

from __future__ import annotations

import subprocess

import pytest

from salvusctl import access, programs, tls
from salvusctl import config as configfile
from salvusctl.datadir import DataDir
from salvusctl.errors import ConfigError


def rendered_for(folder, **overrides):
    raw = configfile.defaults({("haproxy", "enabled"): "yes",
                               **{tuple(k.split("__")): str(v) for k, v in overrides.items()}})
    config = configfile.validate(raw, "test")
    data = DataDir(folder / "data")
    data.secrets.mkdir(parents=True)
    data.etc.mkdir()
    access.ensure_keys(data)
    tls.make_self_signed(data.tls_pem, "math.example.org")
    return data, config, programs.rendered(data, config, None)


def test_each_haproxy_has_a_config_haproxy_accepts(make_folder):
    data, config, files = rendered_for(make_folder(), web__count=3, haproxy__count=2,
                                       haproxy__https_port=9443, haproxy__http_port=9080)
    configs = sorted(p for p in files if p.suffix == ".cfg")
    assert [p.name for p in configs] == ["haproxy0.cfg", "haproxy1.cfg"]
    for index, path in enumerate(configs):
        path.write_text(files[path])
        checked = subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True,
                                 text=True, timeout=30, check=False)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        text = files[path]
        assert f":{9443 + index} ssl crt {data.tls_pem}" in text
        assert f"127.0.0.1:{9080 + index}\n" in text
        for web in range(3):
            assert f"server web{web} 127.0.0.1:{8080 + web} check" in text
    found = programs.plan(data, config, None)
    assert [p.ports for p in found if p.kind == "haproxy"] == [(9080, 9443), (9081, 9444)]
    web0 = next(p for p in found if p.name == "web0").values["options"]
    assert "--entries https://127.0.0.1:9443/ https://127.0.0.1:9444/" in web0
    assert "--trusted-proxies 127.0.0.1 ::1" in web0


def test_a_port_taken_twice_and_a_broken_certificate_are_named(make_folder):
    with pytest.raises(ConfigError, match="would both use port 8080"):
        rendered_for(make_folder(), haproxy__http_port=8080)
    bad = make_folder() / "broken.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    with pytest.raises(ConfigError, match="certificate and its private key in one PEM"):
        tls.check_pem(bad)
    with pytest.raises(ConfigError, match="cannot be read"):
        tls.check_pem(bad.with_name("missing.pem"))


def test_the_self_signed_certificate_names_the_host_and_has_a_fingerprint(make_folder):
    path = make_folder() / "tls.pem"
    tls.make_self_signed(path, "math.example.org")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    text = subprocess.run(["openssl", "x509", "-noout", "-text", "-in", str(path)],
                          capture_output=True, text=True, check=True).stdout
    assert "DNS:math.example.org" in text and "IP Address:127.0.0.1" in text
    assert "prime256v1" in text or "P-256" in text
    assert len(tls.fingerprint(path).split(":")) == 32
    tls.check_pem(path)
