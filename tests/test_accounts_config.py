"""[accounts] as salvusctl renders it and a frontend reads it: providers and
their secrets in a file (never on a command line), the presets' endpoints,
the anonymous switch and the rate limits."""

from __future__ import annotations

import json

from flask import Flask

from salvusctl import access, programs
from salvusctl import config as configfile
from salvusctl.datadir import DataDir
from web import providers


def rendered(folder, **keys: str):
    raw = configfile.defaults({tuple(k.split("__")): v for k, v in keys.items()})
    config = configfile.validate(raw, "test")
    data = DataDir(folder / "data")
    data.secrets.mkdir(parents=True)
    data.etc.mkdir()
    access.ensure_keys(data)
    return data, programs.rendered(data, config, None)


def test_secrets_go_to_the_providers_file_and_nowhere_else(make_folder):
    data, files = rendered(make_folder(), accounts__google_client_id="gid",
                           accounts__google_client_secret="g-secret-1",
                           accounts__oidc_title="Campus",
                           accounts__oidc_discovery_url="https://id.example/.well-known/x",
                           accounts__oidc_client_id="cid", accounts__oidc_client_secret="o-s-2")
    listed = json.loads(files[data.providers_file])
    assert listed == [
        {"name": "google", "client_id": "gid", "client_secret": "g-secret-1"},
        {"name": "oidc", "title": "Campus", "discovery_url": "https://id.example/.well-known/x",
         "client_id": "cid", "client_secret": "o-s-2"}]
    for path, text in files.items():
        if path != data.providers_file:
            assert "g-secret-1" not in text and "o-s-2" not in text, path
    web0 = files[data.programs_dir / "web0.conf"]
    assert f"--providers-file {data.providers_file}" in web0
    assert "--no-anonymous" not in web0 and "--secure-cookies" not in web0
    assert "--rate-anonymous-executions 3000/minute" in web0


def test_no_anonymous_and_tls_reach_the_frontends(make_folder):
    data, files = rendered(make_folder(), accounts__anonymous="no", haproxy__enabled="yes",
                           accounts__executions="50/second")
    web0 = files[data.programs_dir / "web0.conf"]
    assert "--no-anonymous" in web0 and "--secure-cookies" in web0
    assert "--rate-executions 50/second" in web0


def test_each_preset_talks_to_its_provider(make_folder):
    path = make_folder() / "providers.json"
    path.write_text(json.dumps([{"name": n, "client_id": "i", "client_secret": "s"}
                                for n in ("google", "github", "dropbox", "facebook")]))
    app = Flask("t")
    app.secret_key = "k"
    oauth, known = providers.register(app, providers.load(path))
    assert [p.title for p in known.values()] == ["Google", "GitHub", "Dropbox", "Facebook"]
    assert known["google"].oidc and not known["github"].oidc
    with app.app_context():
        google = oauth.create_client("google")
        assert google._server_metadata_url == \
            "https://accounts.google.com/.well-known/openid-configuration"
        assert oauth.create_client("github").authorize_url == \
            "https://github.com/login/oauth/authorize"
        assert oauth.create_client("dropbox").access_token_url == \
            "https://api.dropboxapi.com/oauth2/token"
        assert "facebook.com" in oauth.create_client("facebook").authorize_url
