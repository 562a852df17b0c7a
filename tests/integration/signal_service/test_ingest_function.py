"""The intake hands ingest_webhooks() rows whose fields are exactly the migrated row type's attributes."""

from __future__ import annotations

import asyncpg

from signal_service.intake.repository import INGEST_ROW_FIELDS, WebhookIngest


async def _declared_attributes(database_url: str) -> list[str]:
    """The attribute names of the migrated ingest_webhook_row type, in declaration order."""
    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        records = await connection.fetch(
            """
            SELECT a.attname FROM pg_attribute a JOIN pg_type t ON t.typrelid = a.attrelid
            WHERE t.typname = 'ingest_webhook_row' AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY a.attnum
            """
        )
        parameters = await connection.fetchval(
            "SELECT pg_get_function_arguments(oid) FROM pg_proc WHERE proname = 'ingest_webhooks'"
        )
    finally:
        await connection.close()
    assert parameters == "p_rows ingest_webhook_row[], p_events_channel text, p_audit_body_limit integer"
    return [record[0] for record in records]


async def test_the_caller_passes_every_attribute_of_the_row_type_in_order(database_url: str) -> None:
    declared = await _declared_attributes(database_url)
    assert declared == list(INGEST_ROW_FIELDS)
    assert list(INGEST_ROW_FIELDS) == list(WebhookIngest.__dataclass_fields__)
