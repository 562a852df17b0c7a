"""The notification feed trigger on signal_events, one SQL file per version under notifications/sql/.

As with ingest_webhook(): a shipped version never changes; a change is a new file and a new migration.
"""

from __future__ import annotations

from importlib import resources

STATEMENT_SEPARATOR = "\n-- statement\n"


def feed_function_sql(version: int) -> list[str]:
    """The CREATE FUNCTION and CREATE TRIGGER statements of that version, in order."""
    text = (
        resources.files(__package__)
        .joinpath("sql", f"notify_feed_v{version}.sql")
        .read_text(encoding="utf-8")
    )
    return text.split(STATEMENT_SEPARATOR)
