"""The Salvus web frontend: ``create_app(config)`` builds the Flask app."""

from __future__ import annotations

import time
from pathlib import Path

from flask import Flask, jsonify, send_from_directory

STATIC = Path(__file__).parent / "static"


def create_app(config: dict | None = None) -> Flask:
    app = Flask(__name__, static_folder=None)
    app.config.update(NAME="web", STARTED=time.time())
    app.config.update(config or {})

    @app.get("/health")
    def health():
        return jsonify(status="ok", name=app.config["NAME"],
                       uptime=round(time.time() - app.config["STARTED"], 3))

    @app.get("/")
    def index():
        return send_from_directory(STATIC, "index.html", max_age=0)

    @app.get("/static/<path:name>")
    def static_file(name: str):
        return send_from_directory(STATIC, name, max_age=3600)

    return app
