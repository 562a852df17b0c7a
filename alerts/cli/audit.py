"""`alerts audit prune`: the webhook audit log's retention (a daily job in production)."""

from __future__ import annotations

import argparse
from typing import Any

from alerts.cli.clients import require_database_url, run_database_coroutine
from mesh.logging import configure_logging


def register(commands: Any) -> None:
    audit = commands.add_parser("audit", help="the webhook audit log")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    prune = audit_commands.add_parser("prune", help="delete audit rows older than the retention period")
    prune.add_argument("--retention-days", type=int, help="default: ALERTS_AUDIT_RETENTION_DAYS (90)")
    prune.set_defaults(handler=prune_audit)


def prune_audit(options: argparse.Namespace) -> int:
    from signal_service.audit.service import prune_audit_log
    from signal_service.database import Database, create_engine
    from signal_service.settings import DatabaseJobSettings

    configure_logging("audit")
    settings = DatabaseJobSettings()
    database_url = require_database_url(settings.database_url)
    retention_days = options.retention_days or settings.audit_retention_days

    async def prune() -> int:
        database = Database(create_engine(database_url, pool_size=1))
        try:
            return await prune_audit_log(database, retention_days=retention_days)
        finally:
            await database.dispose()

    deleted = run_database_coroutine(database_url, prune)
    print(f"audit rows older than {retention_days} days deleted: {deleted}")
    return 0
