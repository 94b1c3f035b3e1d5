"""Whole websocket frames on the wire: a workaround for simple-websocket 1.1.0.

simple-websocket 1.1.0 (the latest release, used through flask-sock) writes each
frame with a single ``self.sock.send(out_data)`` and ignores the count it returns
(upstream issue #45, miguelgrinberg/simple-websocket; fixed on its main branch,
not released). Under gevent (the frontend runs ``monkey.patch_all()``) a send
on a full socket buffer writes only part of the frame and returns, so a slow
browser receiving much output gets the rest of the stream shifted against the
frame headers: a corrupt websocket after a few MB.

``whole_frames(ws)`` puts a thin wrapper in place of ``ws.sock`` whose ``send``
writes every byte (``sendall``) under a lock, since the library's background
thread also writes (pings, pongs, close frames) and, now that one write can
take many turns of the event loop, two frames must never interleave.

The lock is also fair enough that the library's pings get through while the
frontend streams output (see ``send``).

This seam can go (this module and its one call in web/websocket.py) once a
simple-websocket release includes the fix; tests/test_frames.py tells when: its
check of the plain library then stops failing. (The fix on main loops over
``send``; the reporter of #45 noted that under gevent it then also needed a
lock around writes, which the test's pings check too.)
"""

from __future__ import annotations

import threading
import time
from typing import Any

from simple_websocket import ConnectionClosed, Server
from wsproto.events import TextMessage


class _WholeWrites:
    """A socket whose ``send`` writes all of ``data``, one writer at a time;
    everything else (recv, close, shutdown, fileno for selectors, ...) is the
    real socket's."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        # The lock has to be of the same kind as the threads that contend for
        # it. simple-websocket makes its background thread with
        # ``threading.Thread`` looked up when a connection is made, so we look
        # up ``threading.Lock`` now too (not at import: a module-level
        # ``from threading import Lock`` could bind the native lock if this
        # module was imported before ``monkey.patch_all()``). Monkey-patched, as
        # the frontend is, both are gevent's: the lock is gevent's cooperative
        # lock and a greenlet waiting for it lets the hub run. A native lock
        # there would deadlock: its holder waits inside ``sendall`` for the hub,
        # and the waiter would block the one OS thread the hub runs in. Not
        # patched (e.g. a threaded Werkzeug server), the threads are native and
        # so is this lock, which a gevent Semaphore is not made for.
        # (Without any lock, a ping lands inside a frame being written, or
        # gevent raises ConcurrentObjectUseError in the second greenlet that
        # waits to write the same socket, which kills the library's thread.)
        self._lock = threading.Lock()
        # Writers waiting for the lock. Exact between greenlets (nothing
        # switches between these statements); between native threads only a
        # hint, where a miscount costs or skips one yield.
        self._waiting = 0

    def send(self, data: bytes, flags: int = 0) -> int:
        self._waiting += 1
        try:
            self._lock.acquire()
        finally:
            self._waiting -= 1
        try:
            self._sock.sendall(data, flags)
        finally:
            self._lock.release()
        if self._waiting:
            # Neither kind of lock is fair: released and at once re-acquired,
            # it goes to the same caller again, however long others waited.
            # The frontend's writer greenlet sends message after message while
            # its queue is not empty (with a slow browser it stays full), so
            # the library's pings would wait until the output stops, and a ping
            # that waits longer than ping_interval makes the library close the
            # connection for want of a pong. So let the waiters (the library's
            # thread, or a close) write first: time.sleep(0) is gevent.sleep(0)
            # when monkey-patched, which runs the woken waiter before us.
            time.sleep(0)
        return len(data)

    sendall = send  # the same guarantee, should a caller ask for it by name

    def __getattr__(self, name: str) -> Any:
        # Only called for names not defined above: pass through to the socket.
        return getattr(self._sock, name)


def send_texts(ws: Server, texts: list[str]) -> None:
    """Several text messages as several whole frames in one write: a browser
    that gets a burst (a cell's queued, result and done) costs one system call.
    Frames are made by the connection's own protocol object, as ``ws.send``
    makes them, and written through the seam above."""
    if not ws.connected:
        raise ConnectionClosed(ws.close_reason, ws.close_message)
    ws.sock.send(b"".join(ws.ws.send(TextMessage(data=text)) for text in texts))


def whole_frames(ws: Server) -> Server:
    """Make ``ws`` (a simple_websocket Server, as flask-sock hands it to a route)
    write each frame whole and alone; returns ``ws``. Call it first thing in
    the route, before anything is sent on ``ws``.

    The handshake response that ``Server`` wrote before this runs is a few
    hundred bytes into an empty buffer, which a single send does write whole.
    The background thread reads ``ws.sock`` afresh for each operation, so from
    here on all its writes go through the wrapper too (its selector may hold
    the real socket: it only uses the file descriptor, which is the same).
    """
    if not isinstance(ws.sock, _WholeWrites):
        ws.sock = _WholeWrites(ws.sock)
    return ws
