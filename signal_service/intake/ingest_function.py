"""The versions of the ingest_webhook() PL/pgSQL function, one SQL file each under intake/sql/.

The migration that introduces a version loads its file, and the next one loads it again to downgrade. A
shipped version never changes: a change is a new file and a new migration, and INGEST_PARAMETERS
(intake/repository.py) follows the newest.
"""

from __future__ import annotations

from importlib import resources


def ingest_function_sql(version: int) -> str:
    """The CREATE FUNCTION statement of that version."""
    return (
        resources.files(__package__)
        .joinpath("sql", f"ingest_webhook_v{version}.sql")
        .read_text(encoding="utf-8")
    )
