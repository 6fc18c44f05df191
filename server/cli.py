"""The `avatar-server` command."""

from __future__ import annotations

import argparse
import logging
import sys

from server.settings import Settings, SettingsError


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from server.app import create_app
    from server.lipsync.selection import EngineUnavailableError, check_engine

    try:
        settings = Settings.from_env(host=args.host, port=args.port)
        check_engine(settings)
    except (SettingsError, EngineUnavailableError) as error:
        print(f"avatar-server: {error}", file=sys.stderr)
        return 2
    level = (args.log_level or settings.log_level).upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    shown_host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    logging.getLogger("server").info(
        "open http://%s:%d/ to try the avatar (API docs: /docs)", shown_host, args.port
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=level.lower())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="avatar-server", description="Stream a lip-synced talking avatar over WebRTC."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP and WebRTC server")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on")
    serve.add_argument("--log-level", default=None, help="debug, info, warning (LOG_LEVEL)")
    serve.set_defaults(run=_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)
