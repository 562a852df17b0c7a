"""Real service processes for end-to-end tests: `alerts serve storage|signal|edge` as children on free
loopback ports, plus throwaway databases for tests that must own every row."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from alerts.stack import START_TIMEOUT_SECONDS, Stack, build_stack, inherited_environment
from tests.keys import SYSTEM_KEYS
from tests.support import TEST_DATABASES

__all__ = ["START_TIMEOUT_SECONDS", "child_env", "fresh_database", "signal_and_edge"]


def child_env(service_env: Mapping[str, str], **overrides: str) -> dict[str, str]:
    """This process's environment without its ALERTS_* variables, then the services', then overrides."""
    return inherited_environment() | dict(service_env) | overrides


@contextlib.contextmanager
def signal_and_edge(service_env: Mapping[str, str], log_dir: Path, **overrides: str) -> Iterator[Stack]:
    """Starts storage, signal and the edge on `service_env`'s database, Redis and keys, waits until they
    serve, and stops them (SIGTERM, then SIGKILL) afterwards; objects go under `log_dir`.

    `overrides` are extra ALERTS_* variables, e.g. ALERTS_PLAN_LIMITS or ALERTS_TRUSTED_PROXIES.
    """
    stack = build_stack(
        log_dir,
        database_url=service_env["ALERTS_DATABASE_URL"],
        redis_url=service_env["ALERTS_REDIS_URL"],
        data_dir=Path(service_env["ALERTS_DATA_DIR"]),
        keys=SYSTEM_KEYS,
        accepted_keys=service_env["ALERTS_API_KEYS"].split(","),
        objects_dir=log_dir / "objects",
        inherited=child_env(service_env),
        **overrides,
    )
    try:
        stack.start("storage", "signal", "edge")
        yield stack
    finally:
        stack.close()


def _with_database(url: str, name: str, scheme: str | None = None) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme=scheme or parts.scheme, path=f"/{name}"))


@contextlib.contextmanager
def fresh_database(database_url: str) -> Iterator[str]:
    """A new, migrated database on the same server as `database_url`; dropped afterwards."""
    from signal_service.migrate import upgrade

    name = TEST_DATABASES.new_name()
    admin_dsn = _with_database(database_url, "postgres", scheme="postgresql")

    async def admin(statement: str) -> None:
        connection = await asyncpg.connect(admin_dsn)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    url = _with_database(database_url, name)
    try:
        upgrade(url)
        yield url
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
