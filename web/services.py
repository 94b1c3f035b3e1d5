"""What a frontend's routes use, built once per app from its config.

``create_app`` keeps one ``Services`` in ``app.extensions["salvus"]``; the
blueprints reach it through ``services()`` while they serve a request.
Building starts nothing: ``start()`` starts the frontend's greenlets
(web/__main__.py calls it when it serves), ``stopped()`` ends them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from flask import Flask, current_app

from sage_worker import curve
from salvusctl import logline
from web import api, security
from web.browsers import BrowserTable, Place
from web.bus import Bus
from web.cache import Cache
from web.db import Database
from web.session_table import SessionTable
from web.sessions import SessionManager
from web.workers import WorkerPool


def log(message: str) -> None:
    """One line (salvusctl/logline.py); a sink that is gone costs the line."""
    logline.say(message)


@dataclasses.dataclass
class Services:
    name: str
    say: Callable[[str], None]
    db: Database
    cache: Cache
    manager: SessionManager
    slots: api.Slots
    allowed_origins: tuple[str, ...]
    server_names: set[str]
    # The database check of /health, cached for a second: {"at": t, "database": ok}.
    health: dict = dataclasses.field(default_factory=dict)

    def start(self) -> None:
        self.manager.start()

    def stopped(self) -> None:
        self.manager.stopped()


def services() -> Services:
    """The serving app's services (inside a request)."""
    return current_app.extensions["salvus"]


def build(app: Flask) -> Services:
    config = app.config
    name = config["NAME"]
    say = log  # the line names the program
    db = Database(config["DSN_FILE"])
    manager = SessionManager(db, config["QUOTAS"], say)
    manager.entries = list(config["ENTRIES"])
    key = curve.load_pair(Path(config["CURVE_KEY"])) if config["CURVE_KEY"] else None
    if config["WORKERS_FILE"]:
        manager.pool = WorkerPool(config["WORKERS_FILE"], manager.client(name, key), say)
    if config["FRONTENDS_FILE"]:
        # Every frontend (and salvusctl message) holds the one web key: it is
        # the bus's allow-list.
        manager.bus = Bus(name, key, {key.public} if key else set(), config["BUS_BIND"],
                          Path(config["FRONTENDS_FILE"]), manager.deliver, say,
                          http=config["PUBLIC_URL"])
    if db.configured:
        place = Place.here(config["INSTANCE"], config["HOST"], name)
        manager.table = BrowserTable(db, place, say)
        manager.records = SessionTable(db, say)
    return Services(name=name, say=say, db=db, cache=Cache(config["MEMCACHED"], say),
                    manager=manager, slots=api.Slots(),
                    allowed_origins=tuple(config["ALLOWED_ORIGINS"]),
                    server_names=security.local_names()
                    | {n.lower() for n in config["SERVER_NAMES"]})
