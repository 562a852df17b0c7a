"""bench/harness.py drops the databases killed bench runs left on a shared server, and only those."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from bench.harness import bench_database_name, drop_leftover_databases, leftover_databases


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_database_is_a_leftover_only_when_its_creator_is_gone() -> None:
    dead = _dead_pid()
    suffix = uuid.uuid4().hex[:10]
    names = [
        f"alerts_bench_p{dead}_{suffix}",
        f"alerts_bench_p{dead}_{suffix}_restore",
        bench_database_name(),
        f"alerts_bench_p{os.getpid()}_{suffix}_restore",
        # Named before names carried a pid: whose it is cannot be told, so it is never a leftover.
        f"alerts_bench_{suffix}",
        f"alerts_test_p{dead}_{suffix}",
    ]
    assert leftover_databases(names) == names[:2]


async def test_the_leftovers_are_dropped_and_the_living_runs_databases_kept(database_url: str) -> None:
    parts = urlsplit(database_url)
    admin_dsn = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
    suffix = uuid.uuid4().hex[:10]
    leftover = f"alerts_bench_p{_dead_pid()}_{suffix}"
    living = f"alerts_bench_p{os.getpid()}_{suffix}"
    unknown = f"alerts_bench_{suffix}"
    connection = await asyncpg.connect(admin_dsn)
    try:
        for name in (leftover, living, unknown):
            await connection.execute(f'CREATE DATABASE "{name}"')
        try:
            dropped = await drop_leftover_databases(admin_dsn)
            rows = await connection.fetch(
                "SELECT datname FROM pg_database WHERE datname = ANY($1::text[])", [leftover, living, unknown]
            )
            assert leftover in dropped
            assert {living, unknown}.isdisjoint(dropped)
            assert {row["datname"] for row in rows} == {living, unknown}
        finally:
            for name in (leftover, living, unknown):
                await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()
