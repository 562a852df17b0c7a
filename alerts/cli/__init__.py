"""The `alerts` command: one module per command group, each registering its own sub-commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from pydantic import ValidationError

from alerts.cli import api_keys, audit, captures, dev, keys, migrate, notifications, serve, token, user
from alerts.cli.clients import CommandError, settings_error
from mesh.errors import ConfigurationError

# What production containers run; deploy/ may use only these (its tests check against this).
PRODUCTION_COMMANDS = (
    ("migrate",),
    ("serve", "edge"),
    ("serve", "signal"),
    ("serve", "storage"),
    ("serve", "capture"),
    ("serve", "notify"),
    # Scheduled (a daily CronJob); takes an optional --retention-days.
    ("audit", "prune"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alerts", description="TradingView alerts microservice")
    commands = parser.add_subparsers(dest="command", required=True)
    for group in (migrate, serve, dev, user, token, api_keys, keys, audit, captures, notifications):
        group.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    options = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = options.handler
    try:
        return handler(options) or 0
    except ConfigurationError as exc:
        # An unknown ALERTS_ variable: one line for `kubectl logs`, exit 2 as for a usage error.
        print(f"alerts: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        failure = settings_error(exc)
    except CommandError as exc:
        failure = exc
    print(f"alerts: error: {failure}", file=sys.stderr)
    return 1
