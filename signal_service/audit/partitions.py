"""The versions of the ensure_audit_log_partitions() PL/pgSQL function, one SQL file each under audit/sql/.

As with ingest_webhook() (intake/ingest_function.py): the migration that introduces a version loads its
file; a shipped version never changes, a change is a new file and a new migration.
"""

from __future__ import annotations

from importlib import resources


def audit_partitions_function_sql(version: int) -> str:
    """The CREATE FUNCTION statement of that version."""
    return (
        resources.files(__package__)
        .joinpath("sql", f"audit_log_partitions_v{version}.sql")
        .read_text(encoding="utf-8")
    )
