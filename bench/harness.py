"""Real processes for benchmarks: a fresh database, a Redis namespace, and the services as child processes.

Uses PostgreSQL and Redis on 127.0.0.1 when they answer, otherwise (or when asked) embedded ones under the
given directory, started as this process's children. Everything it starts, it stops, and it drops the
databases it created, also when the run fails or is stopped with SIGTERM or Ctrl-C.

A run killed outright (SIGKILL, e.g. run_all.py's timeout) cannot clean up: its databases carry its pid
(alerts/scratch_databases.py), and the next stack on the same server drops those whose process is gone.
A database of a run still in progress is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import threading
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import asyncpg
import redis

from alerts.embedded import EmbeddedInfrastructure, start_postgres, start_redis
from alerts.processes import ManagedProcess
from alerts.scratch_databases import ScratchDatabases
from alerts.stack import Stack as ServiceProcesses
from alerts.stack import build_stack
from apidevs.alerts.v1 import resources_pb2, user_service_pb2, user_service_pb2_grpc
from mesh.auth import SystemKeys, generate_key
from mesh.grpc import open_channel

_T = TypeVar("_T")

BENCH_DATABASES = ScratchDatabases("alerts_bench_")


def _reachable(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Stack:
    def __init__(
        self,
        workdir: Path,
        *,
        with_storage: bool = True,
        capture_workers: int = 0,
        notify_workers: int = 0,
        edge_workers: int = 1,
        extra_env: dict[str, str] | None = None,
        embedded: bool = False,
    ) -> None:
        self.workdir = workdir
        self.with_storage = with_storage
        self.capture_workers = capture_workers
        # Notify workers come with the Telegram stub as their Bot API.
        self.notify_workers = notify_workers
        self.edge_workers = edge_workers
        self.extra_env = extra_env or {}
        self.embedded = embedded
        self.infra = EmbeddedInfrastructure()
        self.services: ServiceProcesses | None = None
        self.key = generate_key()
        self.database_name = BENCH_DATABASES.new_name()
        self._databases: list[str] = []
        self._previous_sigterm: Any = None
        self.env: dict[str, str] = {}
        self.admin_dsn = ""
        self.dsn = ""

    @property
    def processes(self) -> dict[str, ManagedProcess]:
        return self.services.processes if self.services else {}

    @property
    def keys(self) -> SystemKeys:
        """The operator's key (also `key`), the edge's and the workers': only the edge may ingest."""
        assert self.services is not None
        return self.services.keys

    @property
    def edge_url(self) -> str:
        assert self.services is not None
        return self.services.edge_url

    @property
    def signal_addr(self) -> str:
        assert self.services is not None
        return self.services.signal_addr

    @property
    def telegram_api_url(self) -> str:
        assert self.services is not None
        return self.services.telegram_api_url

    def __enter__(self) -> Stack:
        self._exit_on_sigterm()
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self) -> None:
        shared_postgres = _reachable(5432) and not self.embedded
        if shared_postgres:
            self.admin_dsn = "postgresql://postgres@127.0.0.1:5432/postgres"
            self.dsn = f"postgresql://postgres@127.0.0.1:5432/{self.database_name}"
        else:
            start_postgres(self.workdir, self.infra)
            host = self.infra.database_url.split("?host=", 1)[1]
            self.admin_dsn = f"postgresql://postgres@/postgres?host={host}"
            self.dsn = f"postgresql://postgres@/{self.database_name}?host={host}"
        if _reachable(6379) and not self.embedded:
            redis_url = "redis://127.0.0.1:6379/0"
        else:
            start_redis(self.workdir, self.infra)
            redis_url = self.infra.redis_url
        if shared_postgres:
            # A server other runs share: clear what killed runs left there.
            self._admin_sync_result(BENCH_DATABASES.drop_leftovers(self.admin_dsn))
        self._create_database(self.database_name)
        self.services = build_stack(
            self.workdir / "logs",
            database_url=self.dsn.replace("postgresql://", "postgresql+asyncpg://", 1),
            redis_url=redis_url,
            data_dir=self.workdir / "data",
            service_key=self.key,
            telegram_stub=self.notify_workers > 0,
            inherited=os.environ,
            ALERTS_REDIS_NAMESPACE=f"bench-{uuid.uuid4().hex[:8]}",
            ALERTS_EDGE_WORKERS=str(self.edge_workers),
            **{"ALERTS_LOG_LEVEL": "WARNING", **self.extra_env},
        )
        self.env = self.services.env
        self.services.migrate()
        names = ["storage"] if self.with_storage else []
        names += ["telegram-stub"] if self.notify_workers else []
        self.services.start(
            *names,
            "signal",
            "edge",
            *(f"capture-{n}" for n in range(self.capture_workers)),
            *(f"notify-{n}" for n in range(self.notify_workers)),
        )

    def __exit__(self, *exc: object) -> None:
        self._restore_sigterm()
        try:
            if self.services is not None:
                self.services.close()
        finally:
            try:
                for name in reversed(list(self._databases)):
                    self._drop_database(name)
                if self.env:
                    self._drop_redis_namespace()
            finally:
                self.infra.stop()

    def _exit_on_sigterm(self) -> None:
        """SIGTERM unwinds the run like Ctrl-C, so that __exit__ cleans up (Python would exit at once)."""
        if threading.current_thread() is not threading.main_thread():
            return

        def exit_now(signum: int, frame: FrameType | None) -> None:
            raise SystemExit(128 + signum)

        self._previous_sigterm = signal.signal(signal.SIGTERM, exit_now)

    def _restore_sigterm(self) -> None:
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None

    def _create_database(self, name: str) -> None:
        self._admin_sync(f'CREATE DATABASE "{name}"')
        self._databases.append(name)

    def _drop_database(self, name: str) -> None:
        self._admin_sync(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._databases.remove(name)

    @contextlib.contextmanager
    def scratch_database(self, suffix: str) -> Iterator[str]:
        """An empty database beside the stack's (named after it, so a killed run's is found too), dropped
        on leaving; yields its DSN."""
        name = f"{self.database_name}_{suffix}"
        self._create_database(name)
        try:
            yield self.dsn.replace(f"/{self.database_name}", f"/{name}", 1)
        finally:
            self._drop_database(name)

    def _drop_redis_namespace(self) -> None:
        """Deletes the keys this run wrote (rate limits, queued capture jobs): only its own namespace."""
        client = redis.Redis.from_url(self.env["ALERTS_REDIS_URL"])
        try:
            keys = list(client.scan_iter(match=f"{self.env['ALERTS_REDIS_NAMESPACE']}:*", count=1000))
            for start in range(0, len(keys), 1000):
                client.delete(*keys[start : start + 1000])
        except redis.RedisError:
            pass
        finally:
            client.close()

    def _admin_sync(self, statement: str) -> None:
        self._admin_sync_result(self._admin(statement))

    def _admin_sync_result(self, job: Coroutine[Any, Any, _T]) -> _T:
        """Runs `job` (a coroutine) in its own thread so that the stack can be entered from inside an event
        loop."""
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, job).result()

    async def _admin(self, statement: str) -> None:
        connection = await asyncpg.connect(self.admin_dsn)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    async def create_user(self, plan: str, **limits: Any) -> str:
        """Creates a user and returns its webhook URL; `signals_quota` overrides the plan's quota."""
        async with open_channel(self.signal_addr, self.key) as channel:
            created = await user_service_pb2_grpc.UserServiceStub(channel).CreateUser(
                user_service_pb2.CreateUserRequest(
                    plan=getattr(resources_pb2, f"PLAN_{plan.upper()}"),
                    signals_quota=int(limits.get("signals_quota", 0)),
                    default_chart_id="bench",
                )
            )
        return created.webhook_url

    def count_sync(self) -> int:
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, self.count_signals()).result()

    async def count_signals(self) -> int:
        connection = await asyncpg.connect(self.dsn)
        try:
            return await connection.fetchval("SELECT count(*) FROM signals")
        finally:
            await connection.close()


def unlimited_plans_env() -> dict[str, str]:
    """Plan limits high enough that quotas and rate limits never refuse a benchmark's load."""
    limits = {"signals_quota": 100_000_000, "rate_per_second": 1_000_000, "rate_burst": 1_000_000}
    return {"ALERTS_PLAN_LIMITS": json.dumps(dict.fromkeys(("free", "basic", "pro", "premium"), limits))}


def print_json(result: dict[str, Any]) -> None:
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
