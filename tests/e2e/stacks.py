"""Real service processes for end-to-end tests: `alerts serve storage|signal|edge` as children on free
loopback ports, plus throwaway databases for tests that must own every row."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from mesh.processes import ManagedProcess, alerts_argv, free_port, grpc_serving, http_ok
from tests.keys import with_service_key

START_TIMEOUT_SECONDS = 60.0


@dataclass
class ServiceStack:
    """The storage service, a signal service and an edge in front, each its own process, logging to
    `log_dir`; objects go to local disk under the stack's own directory."""

    edge_url: str
    signal_addr: str
    storage_addr: str
    env: dict[str, str]
    log_dir: Path
    processes: dict[str, ManagedProcess] = field(default_factory=dict)

    def logs(self) -> str:
        """Everything the processes wrote to stdout and stderr so far."""
        return "".join(path.read_text(errors="replace") for path in sorted(self.log_dir.glob("*.log")))


def child_env(service_env: Mapping[str, str], **overrides: str) -> dict[str, str]:
    """This process's environment without its ALERTS_* variables, then the services', then overrides."""
    inherited = {key: value for key, value in os.environ.items() if not key.startswith("ALERTS_")}
    return inherited | dict(service_env) | overrides


@contextlib.contextmanager
def signal_and_edge(
    service_env: Mapping[str, str], log_dir: Path, **overrides: str
) -> Iterator[ServiceStack]:
    """Starts both processes, waits until they serve, and stops them (SIGTERM, then SIGKILL) afterwards.

    `overrides` are extra ALERTS_* variables, e.g. ALERTS_PLAN_LIMITS or ALERTS_TRUSTED_PROXIES.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    signal_addr = f"127.0.0.1:{free_port()}"
    storage_addr = f"127.0.0.1:{free_port()}"
    edge_port = free_port()
    env = child_env(
        service_env,
        ALERTS_SIGNAL_ADDR=signal_addr,
        ALERTS_STORAGE_ADDR=storage_addr,
        ALERTS_STORAGE_LOCAL_DIR=str(log_dir / "objects"),
        ALERTS_EDGE_HOST="127.0.0.1",
        ALERTS_EDGE_PORT=str(edge_port),
        **overrides,
    )
    stack = ServiceStack(
        edge_url=f"http://127.0.0.1:{edge_port}",
        signal_addr=signal_addr,
        storage_addr=storage_addr,
        env=env,
        log_dir=log_dir,
    )
    stack.processes["storage"] = ManagedProcess(
        "storage",
        alerts_argv("serve", "storage"),
        env,
        ready=lambda: grpc_serving(storage_addr),
        log_path=log_dir / "storage.log",
    )
    stack.processes["signal"] = ManagedProcess(
        "signal",
        alerts_argv("serve", "signal"),
        env,
        ready=lambda: grpc_serving(signal_addr),
        log_path=log_dir / "signal.log",
    )
    stack.processes["edge"] = ManagedProcess(
        "edge",
        alerts_argv("serve", "edge"),
        with_service_key(env, "edge"),
        ready=lambda: http_ok(f"{stack.edge_url}/health/live"),
        log_path=log_dir / "edge.log",
    )
    try:
        for process in stack.processes.values():
            process.start()
        for process in stack.processes.values():
            process.wait_ready(START_TIMEOUT_SECONDS)
        yield stack
    finally:
        for process in reversed(stack.processes.values()):
            process.stop()


def _with_database(url: str, name: str, scheme: str | None = None) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme=scheme or parts.scheme, path=f"/{name}"))


@contextlib.contextmanager
def fresh_database(database_url: str) -> Iterator[str]:
    """A new, migrated database on the same server as `database_url`; dropped afterwards."""
    from signal_service.migrate import upgrade

    name = f"alerts_test_{uuid.uuid4().hex[:12]}"
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
