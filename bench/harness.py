"""Real processes for benchmarks: a fresh database, a Redis namespace, and the services as child processes.

Uses PostgreSQL and Redis on 127.0.0.1 when they answer, otherwise (or when asked) embedded ones under the
given directory, started as this process's children. Everything it starts, it stops (and it drops the
database it created).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import redis

from apidevs.alerts.v1 import resources_pb2, user_service_pb2, user_service_pb2_grpc
from mesh.auth import SystemKeys
from mesh.embedded import EmbeddedInfrastructure, start_postgres, start_redis
from mesh.grpc import open_channel
from mesh.processes import ManagedProcess, alerts_argv, free_port, grpc_serving, http_ok


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
        edge_workers: int = 1,
        extra_env: dict[str, str] | None = None,
        embedded: bool = False,
    ) -> None:
        self.workdir = workdir
        self.with_storage = with_storage
        self.capture_workers = capture_workers
        self.edge_workers = edge_workers
        self.extra_env = extra_env or {}
        self.embedded = embedded
        self.infra = EmbeddedInfrastructure()
        self.processes: dict[str, ManagedProcess] = {}
        # key is the operator's (admin); the edge and the workers present keys of their own role.
        self.keys = SystemKeys.generate()
        self.key = self.keys.operator
        self.database_name = f"alerts_bench_{uuid.uuid4().hex[:10]}"
        self.env: dict[str, str] = {}
        self.admin_dsn = ""
        self.dsn = ""

    @property
    def edge_url(self) -> str:
        return f"http://127.0.0.1:{self.env['ALERTS_EDGE_PORT']}"

    @property
    def signal_addr(self) -> str:
        return self.env["ALERTS_SIGNAL_ADDR"]

    def __enter__(self) -> Stack:
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self) -> None:
        if _reachable(5432) and not self.embedded:
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
        self._admin_sync(f'CREATE DATABASE "{self.database_name}"')
        logs = self.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "ALERTS_ENV": "dev",
            "ALERTS_DATABASE_URL": self.dsn.replace("postgresql://", "postgresql+asyncpg://", 1),
            "ALERTS_REDIS_URL": redis_url,
            "ALERTS_REDIS_NAMESPACE": f"bench-{uuid.uuid4().hex[:8]}",
            "ALERTS_API_KEYS": ",".join(self.keys.entries()),
            "ALERTS_DATA_DIR": str(self.workdir / "data"),
            "ALERTS_EDGE_PORT": str(free_port()),
            "ALERTS_SIGNAL_ADDR": f"127.0.0.1:{free_port()}",
            "ALERTS_STORAGE_ADDR": f"127.0.0.1:{free_port()}",
            "ALERTS_LOG_LEVEL": "WARNING",
            "ALERTS_EDGE_WORKERS": str(self.edge_workers),
            **self.extra_env,
        }
        migrate = ManagedProcess("migrate", alerts_argv("migrate"), self.env, log_path=logs / "migrate.log")
        migrate.start()
        assert migrate.process is not None
        if migrate.process.wait(120) != 0:
            raise RuntimeError(f"migrate failed: {(logs / 'migrate.log').read_text()[-2000:]}")
        if self.with_storage:
            storage_addr = self.env["ALERTS_STORAGE_ADDR"]
            self._launch("storage", ["serve", "storage"], lambda: grpc_serving(storage_addr))
        self._launch("signal", ["serve", "signal"], lambda: grpc_serving(self.signal_addr))
        self._launch("edge", ["serve", "edge"], lambda: http_ok(f"{self.edge_url}/health/live"))
        for index in range(self.capture_workers):
            self._launch(f"capture-{index}", ["serve", "capture"], None)

    def _launch(self, name: str, args: list[str], ready: Any) -> None:
        service_key = self.keys.for_process(name)
        env = {**self.env, "ALERTS_SERVICE_API_KEY": service_key} if service_key else self.env
        process = ManagedProcess(
            name, alerts_argv(*args), env, ready=ready, log_path=self.workdir / "logs" / f"{name}.log"
        )
        process.start()
        self.processes[name] = process
        process.wait_ready(60)

    def __exit__(self, *exc: object) -> None:
        for process in reversed(list(self.processes.values())):
            process.stop()
        self.processes.clear()
        if self.admin_dsn:
            self._admin_sync(f'DROP DATABASE IF EXISTS "{self.database_name}" WITH (FORCE)')
        if self.env:
            self._drop_redis_namespace()
        self.infra.stop()

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
        """Runs in its own thread so that the stack can be entered from inside an event loop."""
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, self._admin(statement)).result()

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
