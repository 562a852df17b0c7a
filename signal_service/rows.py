"""Helpers shared by the repositories: ORM rows into insertable values, columns into what messages need."""

from __future__ import annotations

from typing import Any


def storable(value: Any) -> Any:
    """PostgreSQL text and jsonb cannot hold NUL: it is dropped from strings, also inside JSON values.

    Raw bodies are bytea and keep every byte; only the text read out of them loses NULs.
    """
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {storable(key): storable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [storable(item) for item in value]
    return value


def column_values(row: Any) -> dict[str, Any]:
    """The row's column values, leaving out unset server-defaulted columns so the database fills them."""
    return {
        column.name: storable(getattr(row, column.name))
        for column in row.__table__.columns
        if not (getattr(row, column.name) is None and (column.server_default is not None or column.identity))
    }


def epoch_micros(column: str) -> str:
    """SQL for a timestamptz column as integer microseconds since the epoch (NULL stays NULL): exact, and
    cheaper to turn into a Timestamp's fields than a datetime (signal_service.event_messages)."""
    return f"(extract(epoch FROM {column}) * 1000000)::bigint"
