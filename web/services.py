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
from web import api, providers, security
from web.accounts import Accounts
from web.browsers import BrowserTable, Place
from web.bus import Bus
from web.cache import Cache
from web.db import Database
from web.rates import Rates
from web.session_table import SessionTable
from web.sessions import SessionManager
from web.workers import WorkerPool
from web.worksheets import Worksheets


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
    accounts: Accounts | None = None  # None without a database
    worksheets: Worksheets | None = None
    oauth: object | None = None  # Authlib's OAuth (web/providers.py)
    providers: dict[str, providers.Provider] = dataclasses.field(default_factory=dict)
    anonymous: bool = True  # whether people may compute without signing in
    anonymous_sessions: int | None = None  # sessions one anonymous browser may hold
    rates: Rates | None = None
    secure_cookies: bool = False  # behind TLS: cookies only over https
    # The database check of /health, cached for a second: {"at": t, "database": ok}.
    health: dict = dataclasses.field(default_factory=dict)

    def start(self) -> None:
        self.manager.start()

    def stopped(self) -> None:
        self.manager.stopped()
        if self.rates is not None:  # its memcached connections end with us, not at exit
            self.rates.close()


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
    oauth, known = providers.register(app, providers.load(config["PROVIDERS_FILE"]))
    return Services(name=name, say=say, db=db, cache=Cache(config["MEMCACHED"], say),
                    manager=manager, slots=api.Slots(),
                    allowed_origins=tuple(config["ALLOWED_ORIGINS"]),
                    server_names=security.local_names()
                    | {n.lower() for n in config["SERVER_NAMES"]},
                    accounts=Accounts(db, app.secret_key.encode()) if db.configured else None,
                    worksheets=Worksheets(db) if db.configured else None,
                    oauth=oauth, providers=known, anonymous=config["ANONYMOUS"],
                    anonymous_sessions=config["ANONYMOUS_SESSIONS"],
                    rates=Rates(config["RATE_LIMITS"], config["MEMCACHED"]),
                    secure_cookies=config["SECURE_COOKIES"])
