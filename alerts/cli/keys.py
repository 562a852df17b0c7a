"""`alerts cookie-keys ...` (also spelled `alerts keys ...`, as before): the TradingView cookie encryption
keys (ALERTS_COOKIE_KEYS). API keys are `alerts api-keys ...`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from alerts.cli.clients import require_database_url, run_database_coroutine
from mesh.logging import configure_logging


def register(commands: Any) -> None:
    keys = commands.add_parser(
        "cookie-keys", aliases=["keys"], help="TradingView cookie encryption keys (ALERTS_COOKIE_KEYS)"
    )
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    rotate = key_commands.add_parser(
        "rotate", help="re-encrypt every stored TradingView session with the first configured key"
    )
    rotate.add_argument("--batch-size", type=int, default=500, help="rows per transaction")
    rotate.set_defaults(handler=rotate_keys)
    generate = key_commands.add_parser("generate", help="print a new '<key id>:<base64 key>' entry")
    generate.add_argument("key_id")
    generate.set_defaults(handler=generate_key)


def rotate_keys(options: argparse.Namespace) -> int:
    from mesh.crypto import CookieCipher
    from signal_service.database import Database, create_engine
    from signal_service.sessions.cookie_keys import KeyRotationReport, reencrypt_sessions
    from signal_service.settings import get_settings

    configure_logging("keys")
    settings = get_settings()
    database_url = require_database_url(settings.database_url)
    cipher = CookieCipher.from_settings(settings)

    async def rotate() -> KeyRotationReport:
        database = Database(create_engine(database_url, pool_size=1))
        try:
            return await reencrypt_sessions(database, cipher, batch_size=options.batch_size)
        finally:
            await database.dispose()

    report = run_database_coroutine(database_url, rotate)
    print(f"sessions examined: {report.examined}; re-encrypted to {report.key_id!r}: {report.reencrypted}")
    print(
        f"notification secrets examined: {report.secrets_examined}; "
        f"re-encrypted to {report.key_id!r}: {report.secrets_reencrypted}"
    )
    failed = 0
    for what, unreadable in (
        ("sessions", report.unreadable),
        ("notification secrets", report.secrets_unreadable),
    ):
        if unreadable:
            print(
                f"{len(unreadable)} {what} open with no configured key and were left as they are: "
                + ", ".join(str(user_id) for user_id in unreadable),
                file=sys.stderr,
            )
            failed = 1
    return failed


def generate_key(options: argparse.Namespace) -> int:
    from mesh.crypto import generate_key_entry

    print(generate_key_entry(options.key_id))
    return 0
