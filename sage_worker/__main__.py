"""Entry point of one worker: ``python -m sage_worker --endpoint tcp://ADDR:PORT``.

For now the worker only answers ``ping`` so that supervisord, salvusctl and
the registry have a real program to run; sessions come with the worker issue.
"""

import argparse
import json
import signal
import sys

import zmq


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sage_worker")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--name", default="worker")
    parser.add_argument("--max-sessions", type=int, default=32)
    args = parser.parse_args(argv)
    context = zmq.Context()
    sock = context.socket(zmq.ROUTER)
    sock.linger = 0
    sock.bind(args.endpoint)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    print(f"{args.name}: listening on {args.endpoint}", file=sys.stderr, flush=True)
    while not stopping:
        if not sock.poll(200):
            continue
        frames = sock.recv_multipart()
        try:
            request = json.loads(frames[-1])
            kind = request["type"] if isinstance(request, dict) else None
        except (ValueError, KeyError):
            kind = None
        if kind == "ping":
            reply = {"type": "pong", "name": args.name, "sessions": 0,
                     "max_sessions": args.max_sessions}
        else:
            reply = {"type": "error", "error": "unknown or malformed request"}
        sock.send_multipart([*frames[:-1], json.dumps(reply).encode()])
    sock.close()
    context.term()


if __name__ == "__main__":
    main()
