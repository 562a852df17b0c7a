"""PostgreSQL going away mid-transaction: callers are told UNAVAILABLE (retry, spool), never INTERNAL.

Every test runs its own PostgreSQL server on a free port (tests/own_postgres.py) and takes it away the ways
production does: SIGKILL of the whole server, pg_ctl's immediate and fast shutdowns; the classification
under test is signal_service.database.database_error, which the gRPC server applies to every call.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Awaitable

import asyncpg
import grpc
import pytest
import sqlalchemy as sa
from google.rpc import status_pb2

from apidevs.alerts.v1 import (
    resources_pb2,
    signal_service_pb2,
    signal_service_pb2_grpc,
    user_service_pb2_grpc,
)
from mesh import grpc as mesh_grpc
from mesh.errors import UnavailableError, from_rpc_error, from_rpc_status
from signal_service.database import Database, create_engine, database_error
from tests.conftest import settings_from
from tests.keys import open_system_channel
from tests.own_postgres import OwnPostgres, own_postgres
from tests.support import create_user, ingest_request

OUTAGES = ["kill", "immediate", "fast"]


async def failure_of(call: Awaitable[object]) -> BaseException:
    try:
        await call
    except Exception as exc:
        return exc
    raise AssertionError("the call was expected to fail")


async def select_in_transaction(database: Database, server: OwnPostgres, how: str) -> None:
    """A transaction that runs a statement, loses its server, and runs another."""
    async with database.transaction() as session:
        assert (await session.execute(sa.text("SELECT 1"))).scalar_one() == 1
        await asyncio.to_thread(server.crash, how)
        await session.execute(sa.text("SELECT 2"))


async def select_in_raw_transaction(database: Database, server: OwnPostgres, how: str) -> None:
    async with database.connection() as connection, connection.transaction():
        assert await connection.fetchval("SELECT 1") == 1
        await asyncio.to_thread(server.crash, how)
        await connection.fetchval("SELECT 2")


async def select_one(database: Database) -> int:
    async with database.transaction() as session:
        return int((await session.execute(sa.text("SELECT 1"))).scalar_one())


async def raw_select_one(database: Database) -> int:
    async with database.connection() as connection:
        return int(await connection.fetchval("SELECT 1"))


def assert_unavailable(exc: BaseException) -> None:
    translated = database_error(exc)
    assert isinstance(translated, UnavailableError), f"{type(exc).__name__}: {exc} is not 'unavailable'"
    assert translated.reason == "DATABASE_UNAVAILABLE"


@pytest.fixture
async def database_on_own_server() -> AsyncIterator[tuple[Database, OwnPostgres]]:
    with own_postgres() as server:
        database = Database(create_engine(server.url, pool_size=2))
        try:
            yield database, server
        finally:
            await database.dispose()


@pytest.mark.parametrize("how", OUTAGES)
async def test_a_transaction_losing_its_server_is_unavailable_and_the_pools_recover(
    database_on_own_server: tuple[Database, OwnPostgres], how: str
) -> None:
    database, server = database_on_own_server
    for in_transaction, select in (
        (select_in_transaction, select_one),
        (select_in_raw_transaction, raw_select_one),
    ):
        assert_unavailable(await failure_of(in_transaction(database, server, how)))
        # While it is down, a new unit of work cannot connect at all.
        assert_unavailable(await failure_of(select(database)))
        await asyncio.to_thread(server.start)
        # Pooled connections to the old server are not handed out again.
        assert await select(database) == 1


async def test_failed_statements_are_not_taken_for_an_outage(
    database_on_own_server: tuple[Database, OwnPostgres],
) -> None:
    database, _ = database_on_own_server
    async with database.connection() as connection:
        await connection.execute("CREATE TABLE once (id int PRIMARY KEY)")
        await connection.execute("INSERT INTO once VALUES (1)")

    async def orm(statement: str) -> None:
        async with database.transaction() as session:
            await session.execute(sa.text(statement))

    async def raw(statement: str) -> None:
        async with database.connection() as connection:
            await connection.execute(statement)

    for run in (orm, raw):
        for statement in ("SELECT 1/0", "INSERT INTO once VALUES (1)", "SELEC 1", "SELECT * FROM missing"):
            failure = await failure_of(run(statement))
            assert database_error(failure) is None, f"{statement}: {type(failure).__name__}"
    # And the server really was up: the same calls succeed with valid statements.
    await orm("SELECT 1")
    await raw("SELECT 1")


async def _migrated_database(server: OwnPostgres) -> str:
    from signal_service.migrate import upgrade

    connection = await asyncpg.connect(server.url.replace("+asyncpg", ""))
    try:
        await connection.execute("CREATE DATABASE alerts")
    finally:
        await connection.close()
    url = server.database_url("alerts")
    await asyncio.to_thread(upgrade, url)
    return url


def _codes_of_batch(answer: signal_service_pb2.BatchIngestWebhooksResponse) -> list[grpc.StatusCode]:
    codes = []
    for result in answer.results:
        if result.HasField("response"):
            codes.append(grpc.StatusCode.OK)
        else:
            codes.append(from_rpc_status(status_pb2.Status.FromString(result.error_status)).code)
    return codes


async def _code_of(call: Awaitable[object]) -> list[grpc.StatusCode]:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return [from_rpc_error(exc).code]
    return [grpc.StatusCode.OK]


@pytest.mark.parametrize("how", ["kill", "fast"])
async def test_every_rpc_answers_unavailable_while_postgresql_goes_away_mid_burst(
    service_env: dict[str, str], how: str
) -> None:
    from signal_service.main import SERVICE_NAMES, register, signal_app
    from signal_service.settings import SignalSettings

    with own_postgres() as server:
        url = await _migrated_database(server)
        env = service_env | {
            "ALERTS_DATABASE_URL": url,
            "ALERTS_REDIS_NAMESPACE": f"outage-{uuid.uuid4().hex[:8]}",
        }
        settings = settings_from(env, SignalSettings, signal_addr="127.0.0.1:0")
        async with signal_app(settings) as app:
            grpc_server = mesh_grpc.create_server(settings, translate_error=database_error)
            register(grpc_server, app)
            port, _ = await mesh_grpc.start(grpc_server, address="127.0.0.1:0", service_names=SERVICE_NAMES)
            # Each call carries a key of a role the table accepts for it (IngestWebhook is the edge's).
            channel = open_system_channel(f"127.0.0.1:{port}")
            signals = signal_service_pb2_grpc.SignalServiceStub(channel)
            users = user_service_pb2_grpc.UserServiceStub(channel)
            try:
                user = await create_user(users)
                numbers = itertools.count()

                async def batch() -> list[grpc.StatusCode]:
                    requests = [
                        ingest_request(user.webhook_token, f"BINANCE:BTCUSDT outage {next(numbers)}".encode())
                        for _ in range(20)
                    ]
                    try:
                        answer = await signals.BatchIngestWebhooks(
                            signal_service_pb2.BatchIngestWebhooksRequest(requests=requests), timeout=30
                        )
                    except grpc.aio.AioRpcError as exc:
                        return [from_rpc_error(exc).code] * len(requests)
                    return _codes_of_batch(answer)

                first = await signals.IngestWebhook(ingest_request(user.webhook_token), timeout=30)
                assert first.screenshot_status == resources_pb2.SCREENSHOT_STATUS_PENDING

                def other_calls() -> list[Awaitable[list[grpc.StatusCode]]]:
                    return [
                        _code_of(
                            signals.ClaimCapture(
                                signal_service_pb2.ClaimCaptureRequest(
                                    signal_id=first.signal_id, attempt=0, worker_id="outage-test"
                                ),
                                timeout=30,
                            )
                        ),
                        _code_of(
                            signals.ReportCapture(
                                signal_service_pb2.ReportCaptureRequest(
                                    signal_id=first.signal_id,
                                    status=resources_pb2.SCREENSHOT_STATUS_FAILED,
                                    error="outage-test",
                                ),
                                timeout=30,
                            )
                        ),
                        _code_of(
                            signals.GetSignal(
                                signal_service_pb2.GetSignalRequest(signal_id=first.signal_id), timeout=30
                            )
                        ),
                        _code_of(
                            signals.ListSignals(
                                signal_service_pb2.ListSignalsRequest(user_id=user.user.user_id), timeout=30
                            )
                        ),
                    ]

                # A burst in flight when the server goes away, and calls while it is away.
                in_flight = [asyncio.create_task(batch()) for _ in range(8)]
                in_flight += [asyncio.ensure_future(call) for call in other_calls()]
                await asyncio.sleep(0)
                await asyncio.to_thread(server.crash, how)
                while_down = [await batch(), *[await call for call in other_calls()]]
                codes = [code for answer in await asyncio.gather(*in_flight) for code in answer]
                codes += [code for answer in while_down for code in answer]

                assert grpc.StatusCode.INTERNAL not in codes
                assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}
                # The calls made while it was down cannot have succeeded: the outage was real.
                assert all(code == grpc.StatusCode.UNAVAILABLE for answer in while_down for code in answer)

                await asyncio.to_thread(server.start)
                assert set(await batch()) == {grpc.StatusCode.OK}
                assert set(
                    await _code_of(
                        signals.GetSignal(
                            signal_service_pb2.GetSignalRequest(signal_id=first.signal_id), timeout=30
                        )
                    )
                ) == {grpc.StatusCode.OK}
            finally:
                await channel.close()
                await grpc_server.stop(1)
