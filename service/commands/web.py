"""``finkvra web``: the web workbench (label, review, dashboard) on the service's queue.

``finkvra web [--host 127.0.0.1] [--port 8000] [--labeller NAME] [--behind-proxy]``
    serves the pages with uvicorn. On 127.0.0.1 (the default) without accounts everyone
    labels as ``--labeller`` (default: your user name); on any other address it refuses
    to start (exit 2) unless ``web_accounts`` or ``web_tokens`` are configured.
``finkvra web --hash-password``
    reads a password (twice, not echoed) and prints the line to put under
    ``[web_accounts]`` in the settings; nothing else is stored anywhere.
"""

from __future__ import annotations

import argparse
import getpass
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``finkvra web``."""
    parser = subparsers.add_parser(
        "web",
        help="the web workbench: label with images and plots, review, dashboard",
        description="Serve the labelling, review and dashboard pages on the service's queue. "
        "Bound to 127.0.0.1 by default; another address needs web_accounts or web_tokens.",
    )
    parser.add_argument("--config", metavar="FILE", help="TOML settings file")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument(
        "--labeller", help="who labels when no accounts are configured (default: your user name)"
    )
    parser.add_argument(
        "--behind-proxy",
        action="store_true",
        help="trust X-Forwarded-Proto/For from a reverse proxy (TLS ingress): Secure cookies",
    )
    parser.add_argument(
        "--hash-password",
        action="store_true",
        help="print the scrypt hash of a password for web_accounts, then exit",
    )
    from service.commands._common import add_survey_argument

    add_survey_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted; 2 on configuration errors."""
    if args.hash_password:
        return _hash_password()
    from service.commands._common import queue_or_exit_code, survey_overrides, user_name
    from service.web.auth import Auth, is_loopback

    if not 0 < args.port < 65536:
        print(f"finkvra web: --port {args.port} is not a port (1-65535)", file=sys.stderr)
        return 2
    parts = queue_or_exit_code(args.config, "web", **survey_overrides(args))
    if isinstance(parts, int):
        return parts
    settings, queue = parts
    labeller = args.labeller or user_name("web")
    auth = Auth.from_settings(settings, default_labeller=labeller)
    if not is_loopback(args.host) and not auth.required:
        print(
            f"finkvra web: refusing to serve on {args.host} without authentication: anyone "
            "who reaches it could label as anybody. Configure labeller accounts "
            '(`finkvra web --hash-password`, then [web_accounts] name = "<hash>" in the '
            'settings) or tokens ([web_tokens] name = "<token>", or FINKVRA_WEB_TOKENS), '
            "or bind 127.0.0.1.",
            file=sys.stderr,
        )
        return 2
    import uvicorn

    from service.web.app import app_from_settings

    app = app_from_settings(settings, queue, labeller=labeller)
    app.state.parts.secure_cookies = bool(args.behind_proxy)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"finkvra web: http://{shown}:{args.port}/label (Ctrl-C stops)", flush=True)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        proxy_headers=bool(args.behind_proxy),
        forwarded_allow_ips="*" if args.behind_proxy else None,
    )
    return 0


def _hash_password() -> int:
    from service.web.auth import hash_password

    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            print("finkvra web: the two passwords differ", file=sys.stderr)
            return 2
    else:
        first = sys.stdin.readline().rstrip("\n")
    if len(first) < 8:
        print("finkvra web: use at least 8 characters", file=sys.stderr)
        return 2
    print(hash_password(first))
    return 0
