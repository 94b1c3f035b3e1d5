"""The sign-in providers: presets for Google, GitHub, Dropbox and Facebook,
and any OpenID Connect provider by its discovery URL, registered with
Authlib's Flask client.

salvusctl writes the providers file (secrets/providers.json, readable by the
frontends' user only) from ``[accounts]``; the client secrets travel in it,
never on a command line. Each entry::

    {"name": "google", "client_id": "...", "client_secret": "..."}
    {"name": "campus", "title": "Campus login",
     "discovery_url": "https://id.example/.well-known/openid-configuration", ...}

An entry may also name a preset's endpoints itself (``authorize_url``,
``access_token_url``, ``userinfo_url``): the tests point GitHub's kind of
provider at a local one that way.

OpenID Connect providers are trusted through their signed ID token (Authlib
checks its signature, issuer, audience, expiry and our nonce); OAuth 2 ones
(GitHub, Dropbox, Facebook) through their own API, called with the access
token just obtained over TLS from their token endpoint.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from flask import Flask

from web.accounts import Identity

if TYPE_CHECKING:  # imported when used: a frontend patches ssl for gevent first
    from authlib.integrations.flask_client import OAuth

TIMEOUT = 10  # seconds for every call to a provider


@dataclass(frozen=True)
class Preset:
    title: str
    scope: str
    discovery_url: str = ""  # OpenID Connect
    authorize_url: str = ""  # plain OAuth 2
    access_token_url: str = ""
    userinfo_url: str = ""
    userinfo_method: str = "GET"
    # (userinfo JSON) -> (subject, email, name)
    read: Callable[[dict], tuple[str, str, str]] | None = None


def _github(info: dict) -> tuple[str, str, str]:
    return str(info["id"]), info.get("email") or "", info.get("name") or info.get("login", "")


def _dropbox(info: dict) -> tuple[str, str, str]:
    return (info["account_id"], info.get("email", ""),
            (info.get("name") or {}).get("display_name", ""))


def _facebook(info: dict) -> tuple[str, str, str]:
    return str(info["id"]), info.get("email", ""), info.get("name", "")


PRESETS = {
    "google": Preset("Google", "openid email profile",
                     discovery_url="https://accounts.google.com/.well-known/openid-configuration"),
    "github": Preset("GitHub", "read:user user:email",
                     authorize_url="https://github.com/login/oauth/authorize",
                     access_token_url="https://github.com/login/oauth/access_token",
                     userinfo_url="https://api.github.com/user", read=_github),
    "dropbox": Preset("Dropbox", "account_info.read",
                      authorize_url="https://www.dropbox.com/oauth2/authorize",
                      access_token_url="https://api.dropboxapi.com/oauth2/token",
                      userinfo_url="https://api.dropboxapi.com/2/users/get_current_account",
                      userinfo_method="POST", read=_dropbox),
    "facebook": Preset("Facebook", "email public_profile",
                       authorize_url="https://www.facebook.com/v19.0/dialog/oauth",
                       access_token_url="https://graph.facebook.com/v19.0/oauth/access_token",
                       userinfo_url="https://graph.facebook.com/me?fields=id,name,email",
                       read=_facebook),
}


class ProviderError(Exception):
    """A provider's answer that signs no one in (said to the person as is)."""


class Refused(Exception):
    """Authlib refused the provider's answer (state, nonce, signature, ...)."""

    def __init__(self, error: str):
        super().__init__(error)
        self.error = error


@dataclass(frozen=True)
class Provider:
    name: str
    preset: Preset

    @property
    def title(self) -> str:
        return self.preset.title

    @property
    def oidc(self) -> bool:
        return bool(self.preset.discovery_url)


def load(path: str | Path | None) -> list[Provider]:
    """The providers of the providers file (none without one)."""
    if not path:
        return []
    found = []
    for entry in json.loads(Path(path).read_text()):
        base = PRESETS.get(entry["name"], Preset(entry.get("title") or entry["name"],
                                                  "openid email profile"))
        overrides = {k: entry[k] for k in ("title", "discovery_url", "authorize_url",
                                            "access_token_url", "userinfo_url") if entry.get(k)}
        found.append((Provider(entry["name"], Preset(**{**base.__dict__, **overrides})),
                      entry["client_id"], entry["client_secret"]))
    return found


def register(app: Flask, entries: list) -> tuple[OAuth, dict[str, Provider]]:
    """Authlib's client for each provider of ``load``'s entries."""
    from authlib.integrations.flask_client import OAuth

    oauth = OAuth(app)
    providers = {}
    for provider, client_id, client_secret in entries:
        preset = provider.preset
        kwargs = {"scope": preset.scope, "default_timeout": TIMEOUT}
        if provider.oidc:
            oauth.register(provider.name, client_id=client_id, client_secret=client_secret,
                           server_metadata_url=preset.discovery_url, client_kwargs=kwargs)
        else:
            oauth.register(provider.name, client_id=client_id, client_secret=client_secret,
                           authorize_url=preset.authorize_url,
                           access_token_url=preset.access_token_url, client_kwargs=kwargs)
        providers[provider.name] = provider
    return oauth, providers


def identity(oauth: OAuth, provider: Provider) -> Identity:
    """Finish the redirect: check state (and the ID token's nonce), trade the
    code for a token, and say who signed in. Raises Refused on any mismatch."""
    from authlib.integrations.base_client import OAuthError
    from joserfc.errors import JoseError

    client = oauth.create_client(provider.name)
    try:
        token = client.authorize_access_token()
    except OAuthError as exc:
        raise Refused(exc.error) from None
    except JoseError as exc:  # the ID token: its signature, nonce, issuer, audience, expiry
        raise Refused(f"ID token: {exc.error}") from None
    if provider.oidc:
        claims = token.get("userinfo")
        if not claims or "sub" not in claims:
            raise ProviderError(f"{provider.title} sent no ID token")
        return Identity(provider.name, str(claims["sub"]), claims.get("email", ""),
                        claims.get("name", ""))
    preset = provider.preset
    response = client.request(preset.userinfo_method, preset.userinfo_url, token=token)
    if response.status_code != 200:
        raise ProviderError(f"{provider.title} did not say who signed in "
                            f"(HTTP {response.status_code})")
    subject, email, name = preset.read(response.json())
    return Identity(provider.name, subject, email, name)
