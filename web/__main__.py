"""Entry point of one frontend: ``python -m web --port N --workers-file F --dsn-file F``."""

from gevent import monkey

monkey.patch_all()  # first, before anything imports socket or threading

import argparse  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402

from salvusctl import logline  # noqa: E402
from web import create_app, log  # noqa: E402
from web.api import ApiLimits  # noqa: E402
from web.db import make_cooperative  # noqa: E402
from web.rates import RateLimits  # noqa: E402
from web.sessions import Quotas  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="web")
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="web")
    parser.add_argument("--dsn-file")
    parser.add_argument("--workers-file")
    parser.add_argument("--curve-key", help="this frontend's CURVE certificate (with its "
                        "secret key) for talking to the workers")
    parser.add_argument("--frontends-file", help="the frontends' bus endpoints (salvusctl "
                        "writes it; watched for changes)")
    parser.add_argument("--bus-bind", help="ZeroMQ endpoint of this frontend's bus publisher")
    parser.add_argument("--instance", default="salvus")
    parser.add_argument("--host", default=socket.gethostname())
    parser.add_argument("--public-url", default="", help="this frontend's URL, told to peers")
    parser.add_argument("--entries", nargs="*", default=[],
                        help="the URLs browsers come in by (the haproxies): pages reconnect "
                             "through them rather than to a frontend's own URL")
    parser.add_argument("--trusted-proxies", nargs="*", default=[],
                        help="addresses of the proxies whose X-Forwarded-For is believed")
    parser.add_argument("--memcached", help="memcached's unix socket, or HOST:PORT "
                        "(optional)")
    parser.add_argument("--allowed-origins", default="",
                        help="sites (https://host[:port] ...) that may embed the worksheet "
                             "or call the API from their pages")
    parser.add_argument("--sessions-per-browser", type=int, default=Quotas.per_browser)
    parser.add_argument("--sessions-per-ip", type=int, default=Quotas.per_ip)
    parser.add_argument("--logs-mb", type=int, default=Quotas.logs_mb)
    parser.add_argument("--images-mb", type=int, default=Quotas.images_mb)
    parser.add_argument("--server-names", default="",
                        help="host names served besides IP addresses and local names")
    parser.add_argument("--api-timeout", type=float, default=ApiLimits.max_timeout)
    parser.add_argument("--api-max-code", type=int, default=ApiLimits.max_code)
    parser.add_argument("--api-concurrent", type=int, default=ApiLimits.concurrent)
    parser.add_argument("--api-concurrent-per-ip", type=int,
                        default=ApiLimits.concurrent_per_ip)
    parser.add_argument("--api-rate-per-ip", default=ApiLimits.rate_per_ip)
    parser.add_argument("--api-rate-total", default=ApiLimits.rate_total)
    parser.add_argument("--providers-file", help="the sign-in providers, with their client "
                        "secrets (salvusctl writes it from [accounts])")
    parser.add_argument("--secret-file", help="the appliance's secret (signed cookies, CSRF "
                        "tokens), shared by every frontend")
    parser.add_argument("--no-anonymous", action="store_true",
                        help="computing needs a signed-in account")
    parser.add_argument("--secure-cookies", action="store_true",
                        help="cookies only over https (the frontends are behind TLS)")
    parser.add_argument("--anonymous-sessions", type=int,
                        help="sessions one anonymous browser may hold (tighter than "
                             "--sessions-per-browser)")
    for name, default in RateLimits().__dict__.items():
        parser.add_argument("--rate-" + name.replace("_", "-"), default=default,
                            help="COUNT/UNIT (web/rates.py)")
    args = parser.parse_args(argv)
    logline.setup(args.name, logline.secrets_in(*(Path(f) for f in (
        args.dsn_file, args.curve_key, args.providers_file, args.secret_file) if f)))
    make_cooperative()
    quotas = Quotas(args.sessions_per_browser, args.sessions_per_ip,
                    args.logs_mb, args.images_mb)
    api_limits = ApiLimits(max_code=args.api_max_code, max_timeout=args.api_timeout,
                           concurrent=args.api_concurrent,
                           concurrent_per_ip=args.api_concurrent_per_ip,
                           rate_per_ip=args.api_rate_per_ip, rate_total=args.api_rate_total)
    origins = tuple(args.allowed_origins.split())  # validated by salvusctl's config schema
    app = create_app({"NAME": args.name, "DSN_FILE": args.dsn_file,
                      "WORKERS_FILE": args.workers_file, "CURVE_KEY": args.curve_key,
                      "QUOTAS": quotas, "API_LIMITS": api_limits,
                      "MEMCACHED": args.memcached, "ALLOWED_ORIGINS": origins,
                      "SERVER_NAMES": tuple(args.server_names.split()),
                      "FRONTENDS_FILE": args.frontends_file, "BUS_BIND": args.bus_bind,
                      "INSTANCE": args.instance, "HOST": args.host,
                      "PUBLIC_URL": args.public_url, "ENTRIES": tuple(args.entries),
                      "TRUSTED_PROXIES": tuple(args.trusted_proxies),
                      "PROVIDERS_FILE": args.providers_file, "SECRET_FILE": args.secret_file,
                      "ANONYMOUS": not args.no_anonymous,
                      "ANONYMOUS_SESSIONS": args.anonymous_sessions,
                      "RATE_LIMITS": RateLimits(**{n: getattr(args, "rate_" + n)
                                                   for n in RateLimits().__dict__}),
                      "SECURE_COOKIES": args.secure_cookies})
    app.extensions["salvus"].start()
    listener = socket.socket(socket.AF_INET6 if ":" in args.bind else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit it: no Nagle delay on small websocket frames.
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    listener.bind((args.bind, args.port))
    listener.listen(1024)
    server = WSGIServer(listener, app, log=None)
    gevent.signal_handler(signal.SIGTERM, server.stop)
    log(f"serving http://{args.bind}:{args.port}/")
    server.serve_forever()
    app.extensions["salvus"].stopped()


if __name__ == "__main__":
    main()
