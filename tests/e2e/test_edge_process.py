"""The webhook contract through real processes: `alerts serve storage|signal|edge` as children, httpx
over loopback, and the edge's own OpenAPI document checked by schemathesis."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
import schemathesis
from google.protobuf import field_mask_pb2
from hypothesis import HealthCheck, given, settings
from redis.asyncio import Redis
from schemathesis.checks import ignored_auth, not_a_server_error, positive_data_acceptance

from alerts.stack import Stack
from apidevs.alerts.v1 import resources_pb2, user_service_pb2, user_service_pb2_grpc
from mesh.grpc import open_channel
from tests.e2e.stacks import fresh_database, signal_and_edge
from tests.support import SAMPLE, create_user

pytestmark = pytest.mark.e2e

STRICT_BURST = 2
# Routes whose every answer the OpenAPI document must describe; the others are held to "never a 5xx".
DOCUMENTED_STRICTLY = {
    "/webhook/u/{token}",
    "/health",
    "/health/live",
    "/health/ready",
    "/api/users/{user_id}/stats",
    "/api/users/{user_id}/signals",
    "/api/users/{user_id}/signals/{signal_id}",
}
# A page_token is opaque (only one a page gave back is taken) and a random id names no user: requests the
# schema allows are refused there, as documented (400, 404), so "valid data is accepted" cannot hold. And
# the key is sent as a plain header (below), which the "ignored auth" check cannot take away: the 401
# without a key is tested in tests/integration/edge/test_api.py and tests/e2e/test_openapi_client.py.
OPAQUE_INPUTS = {
    "/api/users/{user_id}/stats",
    "/api/users/{user_id}/signals",
    "/api/users/{user_id}/signals/{signal_id}",
}
# Its path parameter is declared `format: uri`, which no generator can put in one path segment.
NOT_GENERATABLE = {"/media/{key}"}


@pytest.fixture(scope="module")
def strict_stack(
    service_env: dict[str, str],
    database_url: str,
    redis_namespace: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """Processes with tiny rate limits, on a database and Redis namespace of their own (their outbox relay
    must not move the session database's messages into this namespace)."""
    limits = {"free": {"signals_quota": 1000, "rate_per_second": 0.001, "rate_burst": STRICT_BURST}}
    with (
        fresh_database(database_url) as own_database,
        signal_and_edge(
            service_env,
            tmp_path_factory.mktemp("strict-stack"),
            ALERTS_DATABASE_URL=own_database,
            ALERTS_REDIS_NAMESPACE=f"{redis_namespace}-strict-e2e",
            ALERTS_PLAN_LIMITS=json.dumps(limits),
            ALERTS_UNKNOWN_TOKEN_RATE_PER_SECOND="0.001",
            ALERTS_UNKNOWN_TOKEN_BURST=str(STRICT_BURST),
        ) as stack,
    ):
        yield stack


async def post(stack: Stack, token: str, body: bytes = SAMPLE, **kwargs) -> httpx.Response:
    async with httpx.AsyncClient(base_url=stack.edge_url, timeout=10) as client:
        return await client.post(f"/webhook/u/{token}", content=body, **kwargs)


async def test_the_webhook_contract_through_real_processes(edge_stack, edge_stack_users) -> None:
    users = edge_stack_users
    created = await create_user(users)
    accepted = await post(edge_stack, created.webhook_token, headers={"content-type": "text/plain"})
    assert accepted.status_code == 200
    assert accepted.json()["success"] is True
    assert accepted.json()["screenshot_status"] == "pending"

    assert (await post(edge_stack, "whk_" + "N" * 43)).status_code == 404

    await users.UpdateUser(
        user_service_pb2.UpdateUserRequest(
            user=resources_pb2.User(user_id=created.user.user_id, webhook_enabled=False),
            update_mask=field_mask_pb2.FieldMask(paths=["webhook_enabled"]),
        )
    )
    disabled = await post(edge_stack, created.webhook_token, b"BINANCE:BTCUSDT disabled")
    assert (disabled.status_code, disabled.json()["error"]) == (403, "webhook_disabled")

    fenced = await create_user(users, ip_allowlist=["tradingview"])
    # No trusted proxies are configured: a claimed TradingView address in X-Forwarded-For changes nothing.
    refused = await post(edge_stack, fenced.webhook_token, headers={"x-forwarded-for": "52.89.214.238"})
    assert (refused.status_code, refused.json()["error"]) == (403, "ip_not_allowed")

    spent = await create_user(users, signals_quota=1)
    assert (await post(edge_stack, spent.webhook_token)).status_code == 200
    over = await post(edge_stack, spent.webhook_token, b"BINANCE:BTCUSDT over quota")
    assert over.status_code == 429
    assert over.json() == {"success": False, "error": "quota_exceeded"}
    assert int(over.headers["retry-after"]) > 0

    roomy = await create_user(users)
    large = await post(edge_stack, roomy.webhook_token, b"L" * (64 * 1024 + 1))
    assert (large.status_code, large.json()["error"]) == (413, "body_too_large")


async def test_fifty_parallel_posts_against_a_quota_of_ten_through_the_edge_process(
    edge_stack, edge_stack_users
) -> None:
    created = await create_user(edge_stack_users, signals_quota=10)
    async with httpx.AsyncClient(base_url=edge_stack.edge_url, timeout=30) as client:
        answers = await asyncio.gather(
            *(
                client.post(
                    f"/webhook/u/{created.webhook_token}", content=f"BINANCE:BTCUSDT {index}".encode()
                )
                for index in range(50)
            )
        )
    assert sorted(answer.status_code for answer in answers) == [200] * 10 + [429] * 40
    assert {answer.json()["error"] for answer in answers if answer.status_code == 429} == {"quota_exceeded"}


async def test_plan_rate_limits_come_from_settings_and_answer_429_with_retry_after(
    strict_stack, service_key
) -> None:
    async with open_channel(strict_stack.signal_addr, service_key) as channel:
        users = user_service_pb2_grpc.UserServiceStub(channel)
        free = await create_user(users, plan=resources_pb2.PLAN_FREE)
        premium = await create_user(users, plan=resources_pb2.PLAN_PREMIUM)
    statuses = [
        (await post(strict_stack, free.webhook_token, f"BINANCE:BTCUSDT {index}".encode())).status_code
        for index in range(STRICT_BURST)
    ]
    limited = await post(strict_stack, free.webhook_token, b"BINANCE:BTCUSDT one too many")
    assert statuses == [200] * STRICT_BURST
    assert (limited.status_code, limited.json()["error"]) == (429, "rate_limited")
    assert int(limited.headers["retry-after"]) > 900
    # Plans left out of ALERTS_PLAN_LIMITS keep their defaults (premium: a burst of 100).
    for index in range(STRICT_BURST + 3):
        assert (await post(strict_stack, premium.webhook_token, f"ETH {index}".encode())).status_code == 200

    guesses = [(await post(strict_stack, f"whk_{uuid.uuid4().hex}{'G' * 11}")).status_code for _ in range(4)]
    assert guesses == [404] * STRICT_BURST + [429, 429]


async def test_refusals_from_the_edge_process_land_in_the_audit_log(
    edge_stack, edge_stack_users, database_url
) -> None:
    # A malformed token is refused by the edge itself; its audit reason is checked in
    # tests/integration/edge/test_edge_hardening.py. Repeats from one source within a minute share a
    # row, whatever their user agent: rows are found by source and counted by repeat_count.
    unknown_from_loopback = (
        "SELECT * FROM audit_logs"
        " WHERE reason = 'UNKNOWN_TOKEN' AND source_ip = '127.0.0.1' AND created_at > $1"
    )
    since = datetime.now(UTC) - timedelta(minutes=2)
    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        before = sum(row["repeat_count"] for row in await connection.fetch(unknown_from_loopback, since))
        assert (await post(edge_stack, "whk_" + "U" * 43)).status_code == 404
        for _ in range(200):
            rows = await connection.fetch(unknown_from_loopback, since)
            if sum(row["repeat_count"] for row in rows) == before + 1:
                break
            await asyncio.sleep(0.05)
    finally:
        await connection.close()
    assert sum(row["repeat_count"] for row in rows) == before + 1
    assert all("UUUU" not in repr(dict(row)) for row in rows)
    assert {row["body"] for row in rows} == {None}


async def test_session_plaintext_never_reaches_the_processes_logs_or_redis(
    edge_stack, edge_stack_users, redis_url, redis_namespace
) -> None:
    marker = uuid.uuid4().hex
    secrets = (f"E2ESID{marker}", f"E2ESIGN{marker}")
    created = await create_user(edge_stack_users, default_chart_id="c1")
    await edge_stack_users.SetTradingViewSession(
        user_service_pb2.SetTradingViewSessionRequest(
            user_id=created.user.user_id, sessionid=secrets[0], sessionid_sign=secrets[1]
        )
    )
    signal_ids = [
        (await post(edge_stack, created.webhook_token, SAMPLE + b" " * index)).json()["signal_id"]
        for index in range(2)
    ]
    redis = Redis.from_url(redis_url)
    try:
        dumped = b""
        for _ in range(200):
            keys = [key async for key in redis.scan_iter(match=f"{redis_namespace}*")]
            dumped = b"".join([*keys, *[await _value(redis, key) for key in keys]])
            if all(signal_id.encode() in dumped for signal_id in signal_ids):
                break
            await asyncio.sleep(0.05)
    finally:
        await redis.aclose()
    assert all(signal_id.encode() in dumped for signal_id in signal_ids)
    logs = edge_stack.logs()
    assert "signal" in logs, "the processes' logs are what is searched"
    for secret in secrets:
        assert secret not in logs
        assert secret.encode() not in dumped


async def _value(redis: Redis, key: bytes) -> bytes:
    kind = (await redis.type(key)).decode()
    if kind == "string":
        return await redis.get(key) or b""
    if kind == "list":
        return b"".join(await redis.lrange(key, 0, -1))
    if kind == "hash":
        return b"".join(b"".join(pair) for pair in (await redis.hgetall(key)).items())
    if kind == "set":
        return b"".join(await redis.smembers(key))
    if kind == "zset":
        return b"".join(await redis.zrange(key, 0, -1))
    return b""


def test_the_edge_answers_as_its_openapi_document_says(edge_stack: Stack, service_key: str) -> None:
    """No operation answers 5xx for any generated request; the webhook and health routes also answer only
    documented status codes with bodies matching their documented schemas."""
    schema = schemathesis.openapi.from_url(f"{edge_stack.edge_url}/schema/openapi.json")
    headers = {"authorization": f"Bearer {service_key}"}
    tested = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path in NOT_GENERATABLE:
            continue
        checks = None if operation.path in DOCUMENTED_STRICTLY else [not_a_server_error]
        excluded = [positive_data_acceptance, ignored_auth] if operation.path in OPAQUE_INPUTS else None
        answers_as_documented(operation, edge_stack.edge_url, headers, checks, excluded)
        tested.append(operation.path)
    assert set(tested) >= DOCUMENTED_STRICTLY


def answers_as_documented(
    operation: schemathesis.APIOperation,
    base_url: str,
    headers: dict[str, str],
    checks: list | None,
    excluded: list | None = None,
) -> None:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=40,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=base_url, headers=headers, checks=checks, excluded_checks=excluded)

    run()
