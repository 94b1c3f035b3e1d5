"""Entry point of one frontend: ``python -m web --bind ADDR --port N``."""

from gevent import monkey

monkey.patch_all()  # first, before anything imports socket or threading

import argparse  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402

from web import create_app  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="web")
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="web")
    parser.add_argument("--dsn-file")
    args = parser.parse_args(argv)
    app = create_app({"NAME": args.name, "DSN_FILE": args.dsn_file})
    server = WSGIServer((args.bind, args.port), app, log=None)
    gevent.signal_handler(signal.SIGTERM, server.stop)
    print(f"{args.name}: serving http://{args.bind}:{args.port}/", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
