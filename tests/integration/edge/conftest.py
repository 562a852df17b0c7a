"""The edge as a real HTTP server (uvicorn with httptools, in this process and event loop) in front of the
in-process signal server, so that tests drive the real parser, the real app and real gRPC, and can read
the signal service's logs with caplog.

Two edges: `edge_url` trusts X-Forwarded-For from loopback (so tests can pose as any source address),
`untrusting_edge_url` trusts nobody's X-Forwarded-For.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
import uvicorn
from litestar import Litestar

from edge.app import create_app
from edge.http_protocol import BoundedHttpToolsProtocol, HeadLimits
from edge.settings import EdgeSettings
from tests.keys import SYSTEM_KEYS

LOOPBACK_PROXY = "127.0.0.0/8"


@contextlib.asynccontextmanager
async def running_edge(settings: EdgeSettings, app: Litestar | None = None) -> AsyncIterator[str]:
    """The edge app (`app`, or one made from `settings`) on a real uvicorn server; yields its base URL."""
    # The production protocol, its limits from these settings rather than the environment's.
    protocol = type(
        "EdgeUnderTestProtocol",
        (BoundedHttpToolsProtocol,),
        {"head_limits": HeadLimits.from_settings(settings)},
    )
    config = uvicorn.Config(
        app or create_app(settings),
        host="127.0.0.1",
        port=0,
        http=protocol,
        lifespan="on",
        log_config=None,
        access_log=False,
        timeout_keep_alive=settings.keep_alive_timeout_seconds,
        limit_concurrency=settings.max_connections,
        proxy_headers=False,
    )
    server = uvicorn.Server(config)
    # The test process keeps its own signal handlers (Ctrl-C stops pytest, not just this server).
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve(), name="edge-under-test")
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def settings_values(env: dict[str, str]) -> dict[str, object]:
    """ALERTS_* variables as settings keyword arguments, which win over the process environment."""
    return {key.removeprefix("ALERTS_").lower(): value for key, value in env.items()}


def edge_settings(service_env: dict[str, str], signal_server: str, **overrides: object) -> EdgeSettings:
    values: dict[str, object] = {
        key.removeprefix("ALERTS_").lower(): value for key, value in service_env.items()
    }
    own = {"signal_addr": signal_server, "service_api_key": SYSTEM_KEYS.edge}
    return EdgeSettings(**values | own | overrides)


@pytest.fixture(scope="session")
async def edge_url(service_env: dict[str, str], signal_server: str) -> AsyncIterator[str]:
    settings = edge_settings(service_env, signal_server, trusted_proxies=[LOOPBACK_PROXY])
    async with running_edge(settings) as url:
        yield url


@pytest.fixture(scope="session")
async def untrusting_edge_url(service_env: dict[str, str], signal_server: str) -> AsyncIterator[str]:
    async with running_edge(edge_settings(service_env, signal_server)) as url:
        yield url


@pytest.fixture(scope="session")
async def http(edge_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=edge_url, timeout=10) as client:
        yield client


STRICT_PLAN_LIMITS = {"free": {"signals_quota": 1000, "rate_per_second": 0.001, "rate_burst": 3}}
STRICT_UNKNOWN_TOKEN_BURST = 3


@pytest.fixture(scope="session")
async def strict_edge_url(
    service_env: dict[str, str], redis_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    """An edge before a second signal server whose rate limits are tiny (a free user gets 3 webhooks per
    ~17 minutes, an address 3 unknown tokens), so that limits are reached by count, never by timing.

    Its Redis namespace is its own, so its budgets never touch other tests'. It runs the audit writer but
    no outbox relay: the relay would send the shared database's outbox to this namespace's queues.
    """
    from mesh import grpc as mesh_grpc
    from signal_service.main import SERVICE_NAMES, register, signal_app
    from signal_service.settings import SignalSettings

    values: dict[str, object] = {
        key.removeprefix("ALERTS_").lower(): value for key, value in service_env.items()
    }
    settings = SignalSettings(
        **values
        | {
            "redis_namespace": f"{redis_namespace}-strict",
            "plan_limits": STRICT_PLAN_LIMITS,
            "unknown_token_rate_per_second": 0.001,
            "unknown_token_burst": STRICT_UNKNOWN_TOKEN_BURST,
        }
    )
    async with signal_app(settings) as app:
        server = mesh_grpc.create_server(settings)
        register(server, app)
        app.audit.start()
        port, _ = await mesh_grpc.start(server, address="127.0.0.1:0", service_names=SERVICE_NAMES)
        edge = edge_settings(service_env, f"127.0.0.1:{port}", trusted_proxies=[LOOPBACK_PROXY])
        async with running_edge(edge) as url:
            yield url
        await server.stop(1)


@pytest.fixture(scope="session")
async def db(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """Plain SQL on the session database, to check what was stored and to age rows."""
    pool = await asyncpg.create_pool(database_url.replace("+asyncpg", ""), min_size=1, max_size=4)
    yield pool
    await pool.close()


async def audit_rows(
    db: asyncpg.Pool, where: str, *args: object, at_least: int = 1, counted: int = 0
) -> list[asyncpg.Record]:
    """Audit rows matching `where`, waiting for refusals, which the audit writer inserts in batches:
    until there are `at_least` rows, and until they stand for `counted` calls (merged repeats count)."""
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        rows = await db.fetch(f"SELECT * FROM audit_logs WHERE {where} ORDER BY id", *args)  # noqa: S608
        calls = sum(row["repeat_count"] for row in rows)
        if (len(rows) >= at_least and calls >= counted) or asyncio.get_running_loop().time() > deadline:
            return rows
        await asyncio.sleep(0.05)
