"""The edge's spool end to end: a real edge before a real signal service that is down, then back.

While the signal service is unreachable (or its database is) webhooks are answered 202 and kept on disk;
once it answers again they are stored exactly once, in order, without the per-user rate limit refusing
the burst of replays, and a spooled request that had already got through is not stored twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY

from alerts.processes import free_port
from apidevs.alerts.v1 import resources_pb2, signal_service_pb2_grpc, user_service_pb2_grpc
from edge.app import create_app
from edge.batching import IngestBatcher
from edge.settings import EdgeSettings
from edge.spool import WebhookSpool
from mesh import grpc as mesh_grpc
from tests.integration.edge.conftest import edge_settings, running_edge, settings_values
from tests.support import SAMPLE, create_user, eventually

DRAIN_DEADLINE_SECONDS = 60.0


@contextlib.asynccontextmanager
async def signal_service_at(
    address: str, service_env: dict[str, str], **overrides: object
) -> AsyncIterator[None]:
    """A real signal server on a fixed address, so that an edge pointed there sees it go and come back.

    It runs the audit writer but no outbox relay (the session's own signal server relays the shared
    database's outbox).
    """
    from signal_service.main import SERVICE_NAMES, register, signal_app
    from signal_service.settings import SignalSettings

    settings = SignalSettings(**settings_values(service_env) | overrides)
    async with signal_app(settings) as app:
        server = mesh_grpc.create_server(settings)
        register(server, app)
        if "database_url" not in overrides:
            app.audit.start()
        await mesh_grpc.start(server, address=address, service_names=SERVICE_NAMES)
        try:
            yield
        finally:
            await server.stop(1)


def spooling_edge(service_env: dict[str, str], signal_addr: str, data_dir: Path) -> EdgeSettings:
    return edge_settings(service_env, signal_addr, data_dir=data_dir, spool_replay_max_backoff_seconds=0.5)


async def refused_from_loopback(db: asyncpg.Connection) -> int:
    """Unknown-token refusals audited from 127.0.0.1, counting merged repeats."""
    return await db.fetchval(
        "SELECT coalesce(sum(repeat_count), 0) FROM audit_logs"
        " WHERE outcome = 'refused' AND reason = 'UNKNOWN_TOKEN' AND source_ip = '127.0.0.1'"
    )


async def spool_pending(data_dir: Path) -> int:
    spool = WebhookSpool(data_dir / "spool", max_bytes=1)
    await spool.open()
    try:
        return (await spool.totals()).pending
    finally:
        await spool.close()


async def until_drained(data_dir: Path) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DRAIN_DEADLINE_SECONDS
    while loop.time() < deadline:
        if not await spool_pending(data_dir):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{await spool_pending(data_dir)} requests still spooled after the deadline")


def files_holding(directory: Path, secret: bytes) -> list[str]:
    return [path.name for path in directory.iterdir() if path.is_file() and secret in path.read_bytes()]


async def until_on_disk_nowhere(directory: Path, secret: bytes) -> None:
    """Waits for the drained spool's WAL checkpoint (it follows the last delete on the edge's spool thread);
    fails naming the files that still hold `secret`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DRAIN_DEADLINE_SECONDS
    while True:
        holding = await asyncio.to_thread(files_holding, directory, secret)
        if not holding or loop.time() > deadline:
            break
        await asyncio.sleep(0.1)
    assert holding == [], f"the drained spool still holds a webhook token in {holding}"


def alert(index: int) -> bytes:
    return SAMPLE.replace(b"67,890.50", f"{67_000 + index}.25".encode())


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    yield connection
    await connection.close()


@pytest.fixture
async def free_user(users: user_service_pb2_grpc.UserServiceStub) -> tuple[str, str]:
    """A free-plan user (rate limit: burst 10, then 1 a second); returns (user id, webhook token)."""
    created = await create_user(users, plan=resources_pb2.PLAN_FREE, default_chart_id="chart")
    return created.user.user_id, created.webhook_token


async def test_webhooks_spooled_while_the_signal_service_is_down_are_stored_once_in_order(
    service_env: dict[str, str], free_user: tuple[str, str], db: asyncpg.Connection, tmp_path: Path
) -> None:
    user_id, token = free_user
    address = f"127.0.0.1:{free_port()}"
    count = 15  # more than the free plan's burst of 10: replays must not be rate limited
    refused_before = await refused_from_loopback(db)
    async with (
        running_edge(spooling_edge(service_env, address, tmp_path)) as edge_url,
        httpx.AsyncClient(base_url=edge_url, timeout=10) as http,
    ):
        answers = [
            await http.post(f"/webhook/u/{token}?chart=abc", content=alert(index)) for index in range(count)
        ]
        unknown = await http.post(f"/webhook/u/whk_{'x' * 43}", content=SAMPLE)
        for answer in [*answers, unknown]:
            assert answer.status_code == 202, answer.text
            assert answer.json() == {
                "success": True,
                "queued": True,
                "request_id": answer.headers["x-request-id"],
            }
        assert await spool_pending(tmp_path) == count + 1
        # The values are checked in the chaos suite, where the edge is a process of its own; here other
        # edges of this test process publish theirs to the same gauges.
        metrics = (await http.get("/metrics")).text
        assert "\nalerts_spool_pending " in metrics
        assert "\nalerts_spool_bytes " in metrics

        async with signal_service_at(address, service_env):
            await until_drained(tmp_path)
            await until_on_disk_nowhere(tmp_path / "spool", token.encode())
        spool_files = [path for path in (tmp_path / "spool").iterdir() if path.is_file()]
        assert {path.name for path in spool_files} >= {"webhooks.sqlite3", "webhooks.sqlite3-wal"}
        assert {oct(path.stat().st_mode & 0o777) for path in spool_files} == {"0o600"}
        assert oct((tmp_path / "spool").stat().st_mode & 0o777) == "0o700"

    rows = await db.fetch(
        "SELECT raw_body, chart_id, idempotency_key FROM signals WHERE user_id = $1 ORDER BY created_at",
        uuid.UUID(user_id),
    )
    assert [row["raw_body"] for row in rows] == [alert(index) for index in range(count)]
    assert {row["chart_id"] for row in rows} == {"abc"}
    assert all(row["idempotency_key"] for row in rows)
    # The refused replay is audited; repeats of its source and minute share a row, so it is counted
    # rather than found by its request id.
    assert await refused_from_loopback(db) == refused_before + 1


@pytest.mark.parametrize("first_attempt", ["same idempotency key", "no idempotency key"])
async def test_a_spooled_request_that_already_got_through_is_not_stored_twice(
    first_attempt: str,
    service_env: dict[str, str],
    signals: signal_service_pb2_grpc.SignalServiceStub,
    free_user: tuple[str, str],
    db: asyncpg.Connection,
    tmp_path: Path,
) -> None:
    """The edge timed out on a call the signal service then committed, and spooled it anyway.

    The replay finds the first signal by idempotency key or, when the first attempt carried none, by
    the dedupe window around the original received_at.
    """
    user_id, token = free_user
    address = f"127.0.0.1:{free_port()}"
    async with running_edge(spooling_edge(service_env, address, tmp_path)) as edge_url:
        async with httpx.AsyncClient(base_url=edge_url, timeout=10) as http:
            assert (await http.post(f"/webhook/u/{token}", content=SAMPLE)).status_code == 202
        spool = WebhookSpool(tmp_path / "spool", max_bytes=1 << 20)
        await spool.open()
        try:
            [spooled] = await spool.oldest(2)
        finally:
            await spool.close()
        first = spooled.request
        if first_attempt == "no idempotency key":
            first.idempotency_key = ""
        stored = await signals.IngestWebhook(first)
        assert not stored.duplicate

        async with signal_service_at(address, service_env):
            await until_drained(tmp_path)

    rows = await db.fetch("SELECT id FROM signals WHERE user_id = $1", uuid.UUID(user_id))
    assert [str(row["id"]) for row in rows] == [stored.signal_id]
    duplicates = await db.fetchval(
        "SELECT count(*) FROM audit_logs WHERE user_id = $1 AND outcome = 'duplicate'", uuid.UUID(user_id)
    )
    assert duplicates == 1


async def test_the_spool_outlives_the_edge_and_survives_a_database_outage(
    service_env: dict[str, str], free_user: tuple[str, str], db: asyncpg.Connection, tmp_path: Path
) -> None:
    """PostgreSQL unreachable: the signal service answers UNAVAILABLE and the edge spools, as when it is down.
    An edge restarted on the same data directory replays what the previous one spooled.
    """
    user_id, token = free_user
    address = f"127.0.0.1:{free_port()}"
    dead_database = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/gone"
    async with signal_service_at(address, service_env, database_url=dead_database):
        async with (
            running_edge(spooling_edge(service_env, address, tmp_path)) as edge_url,
            httpx.AsyncClient(base_url=edge_url, timeout=10) as http,
        ):
            answers = [await http.post(f"/webhook/u/{token}", content=alert(index)) for index in range(3)]
        assert [answer.status_code for answer in answers] == [202, 202, 202]
        assert await spool_pending(tmp_path) == 3, "UNAVAILABLE replays keep their records"

    async with (
        signal_service_at(address, service_env),
        running_edge(spooling_edge(service_env, address, tmp_path)),
    ):
        await until_drained(tmp_path)

    rows = await db.fetch(
        "SELECT raw_body FROM signals WHERE user_id = $1 ORDER BY created_at", uuid.UUID(user_id)
    )
    assert [row["raw_body"] for row in rows] == [alert(index) for index in range(3)]


async def test_a_burst_beyond_what_the_signal_service_takes_in_time_is_shed_to_the_spool(
    service_env: dict[str, str],
    signal_server: str,
    users: user_service_pb2_grpc.UserServiceStub,
    db: asyncpg.Connection,
    tmp_path: Path,
) -> None:
    created = await create_user(users, plan=resources_pb2.PLAN_PREMIUM)
    # One webhook per call and one call at a time. The first call is held on the user's row lock, the
    # second queues behind it, and the burst is sent only once the second has waited past the shedding
    # delay: each step waits for the one before, so the outcome is the same on any machine. The two
    # held webhooks wait for the lock however slow the machine (a timeout would spool them: not shedding).
    settings = spooling_edge(service_env, signal_server, tmp_path).model_copy(
        update={
            "ingest_batch_max_inflight": 1,
            "ingest_batch_max_size": 1,
            "shed_after_queue_delay_seconds": 0.05,
            "ingest_timeout_seconds": 60.0,
        }
    )
    app = create_app(settings)
    shed_before = REGISTRY.get_sample_value("alerts_webhooks_total", {"status": "202", "reason": "shed"}) or 0
    count = 40
    async with (
        running_edge(settings, app) as edge_url,
        httpx.AsyncClient(base_url=edge_url, timeout=90, limits=httpx.Limits(max_connections=count)) as http,
    ):
        batcher: IngestBatcher = app.state.ingest_batcher

        def post(index: int) -> asyncio.Future[httpx.Response]:
            return asyncio.ensure_future(
                http.post(f"/webhook/u/{created.webhook_token}", content=alert(index))
            )

        async def ingest_waits_for_the_lock() -> bool:
            return bool(
                await db.fetchval(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            )

        async with db.transaction():
            await db.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", uuid.UUID(created.user.user_id))
            held = [post(0)]
            await eventually(ingest_waits_for_the_lock, what="the first call held on the lock", within=30)
            held.append(post(1))
            await eventually(
                lambda: batcher.queue_delay_seconds() > settings.shed_after_queue_delay_seconds,
                what="the second webhook queued past the shedding delay",
                within=30,
            )
            burst = [post(index) for index in range(2, count)]
            shed_answers = await asyncio.gather(*burst)
            assert not any(call.done() for call in held), "nothing of the user's is stored under the lock"
        held_answers = await asyncio.gather(*held)
        assert [answer.status_code for answer in held_answers] == [200, 200]
        assert [answer.status_code for answer in shed_answers] == [202] * (count - 2)
        await until_drained(tmp_path)
    shed = (
        REGISTRY.get_sample_value("alerts_webhooks_total", {"status": "202", "reason": "shed"}) - shed_before
    )
    assert shed == count - 2

    rows = await db.fetch("SELECT raw_body FROM signals WHERE user_id = $1", uuid.UUID(created.user.user_id))
    assert sorted(row["raw_body"] for row in rows) == sorted(alert(index) for index in range(count))
