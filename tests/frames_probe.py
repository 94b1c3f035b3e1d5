"""Probe for tests/test_frames.py: a gevent + flask-sock server that streams big frames.

Run as ``python tests/frames_probe.py --seam|--plain``. It serves one websocket
route on a random loopback port (printed on stdout, one line) that sends
``FRAMES`` text frames of ``FRAME_SIZE`` bytes each and then closes. With
``--seam`` the route first calls ``web.frames.whole_frames(ws)``, as
web/websocket.py does; with ``--plain`` it uses simple-websocket as released.

Two settings make the outcome deterministic rather than a matter of load:

* The listener's SO_SNDBUF is pinned at 64 KiB (the kernel doubles it to
  128 KiB) and accepted sockets inherit it, so a frame of 512 KiB can never go
  out in one ``send``: the plain library's first frame is cut short, whatever
  the client does.
* ``ping_interval`` is 0.5 s, so the library's background thread sends pings
  while the frames stream, which is what the seam's lock and yielding are for.

The test imports this module for the constants and ``frame_text`` only, so the
module level imports nothing but the standard library; ``main`` patches with
gevent before anything else is imported.
"""

from __future__ import annotations

import argparse
import string
import sys
from pathlib import Path

FRAMES = 200
FRAME_SIZE = 512 * 1024  # bytes (ASCII text) per frame
SNDBUF = 64 * 1024  # asked for; Linux doubles it, still far below FRAME_SIZE
PING_INTERVAL = 0.5  # seconds
ROUTE = "/stream"

_ALPHABET = string.ascii_letters + string.digits
# Long enough to slice a frame body out of it at any rotation of the alphabet.
_PATTERN = _ALPHABET * (FRAME_SIZE // len(_ALPHABET) + 2)


def frame_text(index: int) -> str:
    """The text of frame ``index``: a header naming it, then the alphabet
    repeated from a frame-dependent start. Both sides compute it, so the test
    can compare every byte; a frame header or length landing inside a frame
    (bytes outside the alphabet) or a frame shifted against its place shows up
    at once."""
    header = f"frame {index:06d} "
    start = index % len(_ALPHABET)
    return header + _PATTERN[start:start + FRAME_SIZE - len(header)]


def main(argv: list[str] | None = None) -> None:
    """Serve until terminated; the test stops us with SIGTERM (or SIGKILL)."""
    from gevent import monkey

    monkey.patch_all()  # first, before anything imports socket or threading

    import socket

    from flask import Flask
    from flask_sock import Sock
    from gevent.pywsgi import WSGIServer

    parser = argparse.ArgumentParser(prog="frames_probe")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--seam", action="store_true",
                      help="call web.frames.whole_frames(ws) first, as the frontend does")
    mode.add_argument("--plain", action="store_true",
                      help="use simple-websocket as released")
    args = parser.parse_args(argv)

    if args.seam:
        # Run as a script, sys.path[0] is tests/; the project root holds web/.
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from web.frames import whole_frames
    else:
        whole_frames = None

    app = Flask(__name__)
    app.config["SOCK_SERVER_OPTIONS"] = {"ping_interval": PING_INTERVAL}
    sock = Sock(app)

    @sock.route(ROUTE)
    def stream(ws) -> None:
        if whole_frames is not None:
            whole_frames(ws)
        sndbuf = ws.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        if sndbuf >= FRAME_SIZE:
            # The send buffer was not inherited: the plain library might then
            # write whole frames by luck. Say so instead of streaming.
            ws.close(1011, f"SO_SNDBUF is {sndbuf}, not below {FRAME_SIZE}")
            return
        for index in range(FRAMES):
            ws.send(frame_text(index))
        # flask-sock closes ws (code 1000) when we return.

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)  # inherited on accept
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as web/__main__.py
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    server = WSGIServer(listener, app, log=None)
    print(listener.getsockname()[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
