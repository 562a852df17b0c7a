"""`alerts serve <target>`: one service in the foreground, as production runs it."""

from __future__ import annotations

import argparse
from typing import Any

TARGETS = ("edge", "signal", "storage", "capture", "notify", "chart-stub", "telegram-stub", "discord-stub")


def register(commands: Any) -> None:
    serve = commands.add_parser("serve", help="run one service in the foreground")
    serve.add_argument("target", choices=TARGETS)
    serve.add_argument("--host", default="127.0.0.1", help="stubs only")
    serve.add_argument(
        "--port", type=int, default=None, help="stubs only (chart 8090, telegram 8091, discord 8092)"
    )
    serve.set_defaults(handler=serve_target)


def serve_target(options: argparse.Namespace) -> int:
    if options.target == "edge":
        from edge.main import run as run_edge

        run_edge()
    elif options.target == "signal":
        from signal_service.main import run as run_signal

        run_signal()
    elif options.target == "storage":
        from storage_service.main import run as run_storage

        run_storage()
    elif options.target == "capture":
        from capture_service.main import run_worker

        run_worker()
    elif options.target == "chart-stub":
        from capture_service.main import run_chart_stub

        run_chart_stub(options.host, options.port or 8090)
    elif options.target == "notify":
        from notify_service.main import run_worker as run_notify

        run_notify()
    elif options.target == "telegram-stub":
        from notify_service.main import run_telegram_stub

        run_telegram_stub(options.host, options.port or 8091)
    elif options.target == "discord-stub":
        from notify_service.main import run_discord_stub

        run_discord_stub(options.host, options.port or 8092)
    return 0
