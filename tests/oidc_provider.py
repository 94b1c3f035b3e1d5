"""A sign-in provider for the tests: OpenID Connect (discovery, authorization
code, signed ID tokens, userinfo, JWKS) and a GitHub-like OAuth 2 API
(``/user``), served over real HTTP on loopback from a thread.

It signs in whoever the test says (``provider.person``) without asking, so a
browser's redirects run the whole dance by themselves. ``provider.tamper``
makes it misbehave on purpose: ``"nonce"`` puts another nonce in the ID
token, ``"signature"`` signs it with a key it does not publish.
"""

from __future__ import annotations

import base64
import secrets
import threading
import time
from urllib.parse import urlencode

from flask import Flask, abort, jsonify, redirect, request
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from werkzeug.serving import make_server

CLIENT_ID = "salvus-test"
CLIENT_SECRET = "s3cret-" + secrets.token_hex(8)


class Provider:
    def __init__(self):
        self.key = RSAKey.generate_key(2048, parameters={"kid": "k1"}, private=True)
        self.stranger = RSAKey.generate_key(2048, parameters={"kid": "k1"}, private=True)
        self.person = {"sub": "alice-1", "email": "alice@example.org", "name": "Alice"}
        self.tamper: str | None = None
        self.codes: dict[str, dict] = {}  # code -> what it was issued for
        self.tokens: dict[str, dict] = {}  # access token -> person
        self.app = self._routes()
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Provider:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.thread.join(10)
        self.server.server_close()

    def entries(self) -> list[dict]:
        """What salvusctl would write into the providers file for it."""
        return [{"name": "campus", "title": "Campus", "client_id": CLIENT_ID,
                 "client_secret": CLIENT_SECRET,
                 "discovery_url": f"{self.url}/.well-known/openid-configuration"},
                {"name": "github", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                 "authorize_url": f"{self.url}/authorize",
                 "access_token_url": f"{self.url}/token", "userinfo_url": f"{self.url}/user"}]

    def _id_token(self, issued: dict) -> str:
        claims = {"iss": self.url, "sub": issued["person"]["sub"], "aud": CLIENT_ID,
                  "iat": int(time.time()), "exp": int(time.time()) + 300,
                  "email": issued["person"]["email"], "name": issued["person"]["name"]}
        if issued.get("nonce"):
            claims["nonce"] = "not-yours" if self.tamper == "nonce" else issued["nonce"]
        key = self.stranger if self.tamper == "signature" else self.key
        return jwt.encode({"alg": "RS256", "kid": "k1"}, claims, key)

    def _client_ok(self) -> bool:
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            given = base64.b64decode(header[6:]).decode()
            return given == f"{CLIENT_ID}:{CLIENT_SECRET}"
        return (request.form.get("client_id"), request.form.get("client_secret")) == \
            (CLIENT_ID, CLIENT_SECRET)

    def _routes(self) -> Flask:
        app = Flask("oidc-provider")

        @app.get("/.well-known/openid-configuration")
        def discovery():
            return jsonify(issuer=self.url, authorization_endpoint=f"{self.url}/authorize",
                           token_endpoint=f"{self.url}/token",
                           userinfo_endpoint=f"{self.url}/userinfo",
                           jwks_uri=f"{self.url}/jwks", response_types_supported=["code"],
                           subject_types_supported=["public"],
                           id_token_signing_alg_values_supported=["RS256"])

        @app.get("/jwks")
        def jwks():
            return jsonify(KeySet([self.key]).as_dict(private=False))

        @app.get("/authorize")
        def authorize():
            if request.args.get("client_id") != CLIENT_ID or \
                    request.args.get("response_type") != "code":
                abort(400)
            code = secrets.token_urlsafe(16)
            self.codes[code] = {"person": dict(self.person),
                                "nonce": request.args.get("nonce"),
                                "redirect_uri": request.args["redirect_uri"]}
            back = {"code": code, "state": request.args.get("state", "")}
            return redirect(f"{request.args['redirect_uri']}?{urlencode(back)}")

        @app.post("/token")
        def token():
            issued = self.codes.pop(request.form.get("code", ""), None)
            if not self._client_ok() or issued is None or \
                    request.form.get("redirect_uri") != issued["redirect_uri"]:
                return jsonify(error="invalid_grant"), 400
            access = secrets.token_urlsafe(16)
            self.tokens[access] = issued["person"]
            return jsonify(access_token=access, token_type="Bearer", expires_in=300,
                           id_token=self._id_token(issued))

        def bearer() -> dict:
            person = self.tokens.get(request.headers.get("Authorization", "")[7:])
            if person is None:
                abort(401)
            return person

        @app.get("/userinfo")
        def userinfo():
            return jsonify(bearer())

        @app.get("/user")
        def github_user():
            person = bearer()
            return jsonify(id=abs(hash(person["sub"])) % 10**9, login=person["sub"],
                           name=person["name"], email=person["email"])

        return app
