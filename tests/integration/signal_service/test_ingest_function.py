"""The intake calls ingest_webhook() with exactly the parameters the migrated function declares."""

from __future__ import annotations

import asyncpg

from signal_service.intake.repository import INGEST_PARAMETERS, WebhookIngest, ingest_arguments
from signal_service.outbox.repository import OutboxEntry


async def _declared_inputs(database_url: str) -> list[str]:
    """The input parameter names of the migrated ingest_webhook(), in declaration order."""
    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        arguments = await connection.fetchval(
            "SELECT pg_get_function_arguments(oid) FROM pg_proc WHERE proname = 'ingest_webhook'"
        )
    finally:
        await connection.close()
    declared = [argument.strip() for argument in arguments.split(",")]
    return [argument.split()[0] for argument in declared if not argument.startswith(("OUT ", "INOUT "))]


def _any_row() -> WebhookIngest:
    fields = {name: None for name in WebhookIngest.__dataclass_fields__}
    return WebhookIngest(
        **fields
        | {
            "ip_allowlist": (),
            "body_sha256": b"\x00" * 32,
            "parse_problems": [],
            "extra": {},
            "outbox": OutboxEntry(queue_name="q", actor_name="a", args=[], options={}),
        }
    )


async def test_the_caller_passes_every_declared_parameter_by_name(database_url: str) -> None:
    declared = await _declared_inputs(database_url)
    assert declared == list(INGEST_PARAMETERS)
    assert sorted(ingest_arguments(_any_row())) == sorted(INGEST_PARAMETERS)
