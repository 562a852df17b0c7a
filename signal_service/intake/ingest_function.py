"""The versions of the ingest functions, one SQL file each under intake/sql/.

ingest_webhook() (v1-v4) stores one webhook per call; ingest_webhooks() (v5 on) stores a batch with one
statement per table, taking its rows as an array of the ingest_webhook_row type (v6 changes the function
only: ingest_webhook_row_v5.sql is still its row type). The migration that
introduces a version loads its files, and the next one loads them again to downgrade. A shipped version
never changes: a change is a new file and a new migration, and WebhookIngest (intake/repository.py)
follows the newest row type.
"""

from __future__ import annotations

from importlib import resources


def _sql(name: str) -> str:
    return resources.files(__package__).joinpath("sql", name).read_text(encoding="utf-8")


def ingest_function_sql(version: int) -> str:
    """The CREATE FUNCTION statement of that version of the one-row function (v1-v4)."""
    return _sql(f"ingest_webhook_v{version}.sql")


def batch_ingest_sql(version: int) -> tuple[str, str]:
    """The CREATE TYPE statement of that version's row type, then its CREATE FUNCTION statement (v5 on)."""
    return _sql(f"ingest_webhook_row_v{version}.sql"), batch_function_sql(version)


def batch_function_sql(version: int) -> str:
    """That version's CREATE FUNCTION statement alone, for a version that keeps the previous row type and
    signature (v6 keeps v5's)."""
    return _sql(f"ingest_webhooks_v{version}.sql")
