"""Hypothesis drives IngestWebhook on the real signal server with random bodies, content types, query
strings and chart ids: no call fails INTERNAL, and every accepted signal is stored with its exact body."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apidevs.alerts.v1 import resources_pb2, signal_service_pb2
from mesh.errors import from_rpc_error
from tests.support import create_user, ingest_request

FIELD_NAMES = [
    "ticker",
    "price",
    "time",
    "signal",
    "signal_type",
    "interval",
    "indicator",
    "symbol",
    "exchange",
]
scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
json_bodies = st.dictionaries(
    st.sampled_from(FIELD_NAMES) | st.text(max_size=12),
    scalars | st.lists(scalars, max_size=3) | st.dictionaries(st.text(max_size=5), scalars, max_size=3),
    max_size=8,
).map(lambda value: json.dumps(value).encode())
line_bodies = st.lists(
    st.tuples(
        st.sampled_from(["Ticker", "Precio", "Price", "Señal", "Timeframe", "Hora", "🪙 Ticker"]),
        st.text(max_size=30),
    ),
    max_size=6,
).map(lambda lines: "\n".join(f"{label}: {value}" for label, value in lines).encode())
bodies = st.binary(max_size=4096) | st.text(max_size=2000).map(str.encode) | json_bodies | line_bodies
content_types = st.sampled_from(
    ["", "text/plain", "application/json", "application/json; charset=utf-8", "text/plain; charset=latin-1"]
) | st.text(max_size=60)
queries = st.dictionaries(st.text(max_size=12), st.text(max_size=40), max_size=4)
# Refusals that are the caller's, not the service's: over the rate limit, or a body over 64 KiB.
EXPECTED_REFUSALS = {(grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")}


async def test_random_input_never_fails_internally_and_accepted_signals_keep_their_body(
    signals, users, database_url
) -> None:
    owners = [await create_user(users, plan=resources_pb2.PLAN_PREMIUM) for _ in range(4)]
    loop = asyncio.get_running_loop()
    accepted: list[tuple[str, str, bytes]] = []

    async def invoke(
        request: signal_service_pb2.IngestWebhookRequest,
    ) -> signal_service_pb2.IngestWebhookResponse:
        return await signals.IngestWebhook(request)

    def call(
        request: signal_service_pb2.IngestWebhookRequest,
    ) -> signal_service_pb2.IngestWebhookResponse | None:
        """One call on the test's event loop, from Hypothesis's thread; an unexpected refusal fails."""
        try:
            return asyncio.run_coroutine_threadsafe(invoke(request), loop).result(timeout=30)
        except grpc.aio.AioRpcError as exc:
            refusal = (exc.code(), from_rpc_error(exc).reason, exc.details())
        assert refusal[:2] in EXPECTED_REFUSALS, refusal
        return None

    @given(
        body=bodies,
        content_type=content_types,
        query=queries,
        chart=st.text(max_size=40),
        pick=st.integers(0, 3),
    )
    @settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def ingest_anything(body: bytes, content_type: str, query: dict[str, str], chart: str, pick: int) -> None:
        owner = owners[pick]
        request = ingest_request(owner.webhook_token, body, content_type=content_type, chart_id=chart)
        request.query.update(query)
        answer = call(request)
        if answer is not None:
            uuid.UUID(answer.signal_id)
            accepted.append((answer.signal_id, owner.user.user_id, body))

    await asyncio.to_thread(ingest_anything)

    assert accepted
    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        stored = {
            str(row["id"]): (str(row["user_id"]), row["raw_body"])
            for row in await connection.fetch(
                "SELECT id, user_id, raw_body FROM signals WHERE id = ANY($1::uuid[])",
                [uuid.UUID(signal_id) for signal_id, _, _ in accepted],
            )
        }
    finally:
        await connection.close()
    for signal_id, user_id, body in accepted:
        # A duplicate answer names the first signal with this very body, so the body matches either way.
        assert stored[signal_id] == (user_id, body)
    for signal_id, _, body in accepted[:20]:
        fetched = await signals.GetSignal(signal_service_pb2.GetSignalRequest(signal_id=signal_id))
        assert fetched.raw_text == body.decode("utf-8", errors="replace").replace("\x00", "")
