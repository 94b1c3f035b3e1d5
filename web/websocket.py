"""One browser's websocket: parse, dispatch, keep the connection up on errors."""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass

from flask import Blueprint, request
from flask_sock import Sock
from simple_websocket import ConnectionClosed

from salvusctl import logline
from web import wire
from web.frames import whole_frames
from web.pages import BROWSER_COOKIE
from web.rates import Rates
from web.services import services
from web.sessions import Connection, Session, SessionManager

RECEIVE_TIMEOUT = 30  # seconds; protocol pings (ping_interval) notice dead peers

websocket = Blueprint("websocket", __name__)


# Given a blueprint, flask-sock's route decorator keeps nothing of its own:
# the Sock here is only the decorator's maker.
@dataclass(frozen=True)
class Who:
    """Whom a websocket serves: its browser, its address, its account (None:
    anonymous) and what limits them (web/rates.py)."""
    browser: str
    ip: str
    account: str | None = None
    rates: Rates | None = None
    anonymous_sessions: int | None = None  # sessions an anonymous browser may hold

    def count(self, kind: str) -> None:
        if self.rates is not None:
            self.rates.check(kind, self.account, self.ip)


@Sock().route("/ws", bp=websocket)
def browser_socket(ws) -> None:
    browser = request.cookies.get(BROWSER_COOKIE) or f"ip:{request.remote_addr}"
    account = request.environ.get("salvus.account")  # web/signin.py checked it
    found = services()
    who = Who(browser, request.remote_addr or "?", account.id if account else None,
              found.rates, None if account else found.anonymous_sessions)
    serve_browser(ws, found.manager, who)


def serve_browser(ws, manager: SessionManager, who: Who) -> None:
    """Serve one websocket until it closes. A message that cannot be handled
    (a refusal, or a fault of ours) costs that message, never the connection."""
    browser = who.browser
    whole_frames(ws)  # until simple-websocket releases its fix for partial writes
    connection = Connection(ws, browser)
    connection.start()
    manager.connected(connection)
    session: Session | None = None
    try:
        while not connection.closed:
            frame = ws.receive(timeout=RECEIVE_TIMEOUT)
            if frame is None:
                continue
            try:
                message = wire.parse(frame)
                session = _dispatch(message, connection, session, manager, who)
            except wire.WireError as err:
                connection.send_text(wire.error(err))
            except Exception as exc:
                manager.problem(type(exc).__name__, f"a browser message failed: {exc!r}")
                connection.send_text(wire.error(wire.WireError(
                    "internal", "this message could not be handled; it was logged")))
    except ConnectionClosed:
        pass
    finally:
        if session is not None:
            session.detach(connection)
            logline.say("a page left the session", session=session.id, browser=browser)
        manager.disconnected(connection)
        connection.close()
        _hang_up(ws)


def _hang_up(ws) -> None:
    """End the TCP connection with the websocket. Under gevent's WSGI server
    flask-sock leaves it open when the route returns: gevent's handler waits on
    it for a next HTTP request, so a client that closed waits for our FIN until
    its own timeout (10 s for the ``websockets`` client) while we hold a
    greenlet and a descriptor. simple-websocket works on a duplicate of the
    connection's socket and closes only that; shutting down the handler's own
    socket (found where simple-websocket finds it) ends the connection for
    both. A close frame goes first if none was sent."""
    with contextlib.suppress(ConnectionClosed, OSError):
        if ws.connected:
            ws.close()
    stream = ws.environ.get("wsgi.input")
    stream = getattr(stream, "rfile", stream) if not hasattr(stream, "raw") else stream
    connection = getattr(getattr(stream, "raw", None), "_sock", None)
    if connection is not None:
        with contextlib.suppress(OSError):
            connection.shutdown(socket.SHUT_RDWR)


def _dispatch(message: dict, connection: Connection, session: Session | None,
              manager: SessionManager, who: Who) -> Session | None:
    kind = message["type"]
    browser, ip = who.browser, who.ip
    if kind == "ping":
        connection.send(wire.pong())
        return session
    if kind == "open":
        chosen = manager.open(message.get("session"), browser, ip, message.get("last_seq", 0),
                              starting=lambda: who.count("starts"),
                              per_browser=who.anonymous_sessions)
        if session is not None and session is not chosen:
            session.detach(connection)
        chosen.attach(connection, message.get("last_seq", 0))
        manager.following(connection, chosen)
        logline.say(f"a page from {ip} opened the session", session=chosen.id, browser=browser)
        return chosen
    if kind == "close":
        manager.close_for(browser, message["session"])
        return session
    if session is None:
        raise wire.WireError("no_session", f"send 'open' before '{kind}'")
    if kind == "execute":
        try:
            who.count("executions")
        except wire.WireError as err:
            err.details["cell"] = message["cell"]  # the page marks that cell not run
            raise
        session.execute(message["cell"], message["code"],
                        {k: message[k] for k in ("typeset", "language", "webgl") if k in message})
    elif kind == "interrupt":
        session.interrupt()
    elif kind == "restart":
        session.restart()
    elif kind == "interact":
        session.interact(message["cell"], message["interact"], message["values"])
    elif kind == "complete":
        session.complete(connection, message["cell"], message["code"])
    elif kind == "layout":
        session.arrange(message["cells"])
    elif kind == "leave":
        session.left = True  # its tab is closing: free its place soon unless it reloads
    return session
