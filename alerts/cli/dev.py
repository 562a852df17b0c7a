"""`alerts dev` and `alerts demo`: the whole system on this machine."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

from alerts.cli.clients import CommandError
from mesh.logging import configure_logging
from mesh.settings import CommonSettings

if TYPE_CHECKING:
    from alerts.dev import DevStack


def register(commands: Any) -> None:
    dev = commands.add_parser("dev", help="run everything locally (embedded PostgreSQL and Redis when unset)")
    dev.add_argument("--capture-workers", type=int, default=1)
    dev.set_defaults(handler=run_dev)

    demo = commands.add_parser(
        "demo", help="start everything, fire sample alerts for two users, and show every screenshot taken"
    )
    demo.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the captures")
    demo.add_argument("--capture-workers", type=int, default=1)
    demo.add_argument("--stay", action="store_true", help="keep running after the table, for the viewer")
    demo.set_defaults(handler=run_demo)


def run_dev(options: argparse.Namespace) -> int:
    from alerts.dev import DevStack
    from alerts.processes import ProcessStartError

    configure_logging("dev")
    stack = DevStack(CommonSettings(), capture_workers=options.capture_workers)
    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    print("starting embedded infrastructure and services...", flush=True)
    try:
        stack.start()
    except ProcessStartError as exc:
        raise CommandError(str(exc)) from None
    try:
        print(
            "\nalerts dev is running\n"
            f"  webhooks:     {stack.edge_url}/webhook/u/<token>\n"
            "                (create a user: alerts user create --plan premium)\n"
            f"  health:       {stack.edge_url}/health\n"
            f"  OpenAPI:      {stack.edge_url}/schema\n"
            f"  viewer:       {stack.edge_url}/ui  (a link for one user: alerts token create <user id>)\n"
            f"  gRPC signal:  {stack.signal_addr}   storage: {stack.storage_addr}\n"
            f"  chart stub:   {stack.tradingview_url or '(real TradingView)'}\n"
            f"  notify stubs: {_notify_stubs(stack)}\n"
            f"  admin key:    {stack.api_key}\n"
            f"  logs:         {stack.log_dir}/\n"
            "Press Ctrl-C to stop.",
            flush=True,
        )
        while not stopping:
            dead = stack.dead_processes()
            if dead:
                print(f"process exited: {', '.join(dead)}; see {stack.log_dir}/", file=sys.stderr, flush=True)
                return 1
            time.sleep(0.5)
    finally:
        print("stopping...", flush=True)
        stack.stop()
    return 0


def run_demo(options: argparse.Namespace) -> int:
    from alerts.demo import demo_settings, run_demo
    from alerts.processes import ProcessStartError

    # The demo's own output is the progress and the table; the services log to files under the data dir.
    configure_logging("demo", level="WARNING")
    try:
        return run_demo(
            demo_settings(),
            timeout_seconds=options.timeout,
            capture_workers=options.capture_workers,
            stay=options.stay,
        )
    except ProcessStartError as exc:
        raise CommandError(str(exc)) from None


def _notify_stubs(stack: DevStack) -> str:
    """Where to see what the Telegram and Discord stubs received (the ones this stack runs)."""
    stubs = [
        f"{label} {url}/_stub/requests"
        for label, name, url in (
            ("Telegram", "telegram-stub", stack.telegram_api_url),
            ("Discord", "discord-stub", stack.discord_stub_url),
        )
        if name in stack.processes
    ]
    return "   ".join(stubs) or "(none: real providers)"
