"""Scratch databases of killed runs are dropped by the next run on the server, and only those."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from alerts.scratch_databases import ScratchDatabases


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _scratch() -> ScratchDatabases:
    # A prefix of this test's own, so that no other run's databases are in its way.
    return ScratchDatabases(f"alerts_scratch_{uuid.uuid4().hex[:8]}_")


def _name_of(scratch: ScratchDatabases, pid: int, suffix: str = "") -> str:
    """The name `pid` would have given, in this pid namespace."""
    made = scratch.new_name()
    return made.replace(f"_p{os.getpid()}_", f"_p{pid}_", 1) + suffix


def test_a_database_is_a_leftover_only_when_its_creator_is_gone_from_this_namespace() -> None:
    scratch = _scratch()
    dead = _dead_pid()
    dead_runs = _name_of(scratch, dead)
    names = [
        dead_runs,
        f"{dead_runs}_restore",
        scratch.new_name(),
        f"{scratch.new_name()}_restore",
        # Made in another pid namespace: its pid says nothing about processes here.
        dead_runs.replace(f"{scratch.prefix}n", f"{scratch.prefix}n9", 1),
        # Named without a pid: whose it is cannot be told.
        f"{scratch.prefix}{uuid.uuid4().hex[:10]}",
        # Another kind of run's.
        _name_of(ScratchDatabases("alerts_other_"), dead),
    ]
    assert scratch.leftovers(names) == names[:2]


async def test_the_leftovers_are_dropped_and_the_living_runs_databases_kept(database_url: str) -> None:
    parts = urlsplit(database_url)
    admin_dsn = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
    scratch = _scratch()
    leftover = _name_of(scratch, _dead_pid())
    living = scratch.new_name()
    unknown = f"{scratch.prefix}{uuid.uuid4().hex[:10]}"
    connection = await asyncpg.connect(admin_dsn)
    try:
        for name in (leftover, living, unknown):
            await connection.execute(f'CREATE DATABASE "{name}"')
        try:
            dropped = await scratch.drop_leftovers(admin_dsn)
            rows = await connection.fetch(
                "SELECT datname FROM pg_database WHERE datname = ANY($1::text[])", [leftover, living, unknown]
            )
            assert dropped == [leftover]
            assert {row["datname"] for row in rows} == {living, unknown}
        finally:
            for name in (leftover, living, unknown):
                await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()
