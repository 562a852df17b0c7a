"""Databases made for one run (a test session, a benchmark), named after the process that made them.

A run killed outright (SIGKILL, a CI timeout) cannot drop what it made; since each name carries its
creator's pid and pid namespace (``<prefix>n<namespace>_p<pid>_<hex>``), the next run of the same kind on
that server drops the ones whose process is gone. A database of a run still in progress is never
touched, nor one made in another pid namespace (a container sharing the server: its pids mean nothing
here), nor one whose name carries no pid.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterable

import asyncpg


class ScratchDatabases:
    """The scratch databases of one kind of run, told apart by their name's prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._namespace = _pid_namespace()
        self._creator_pid = re.compile(rf"{re.escape(prefix)}n{self._namespace}_p(\d+)_")

    def new_name(self) -> str:
        """A new database name carrying this process's pid (as do the names made from it by a suffix)."""
        return f"{self.prefix}n{self._namespace}_p{os.getpid()}_{uuid.uuid4().hex[:10]}"

    def leftovers(self, names: Iterable[str]) -> list[str]:
        """The names among `names` whose creating process is gone."""
        leftovers = []
        for name in names:
            creator = self._creator_pid.match(name)
            if creator is not None and not _process_alive(int(creator.group(1))):
                leftovers.append(name)
        return leftovers

    async def drop_leftovers(self, admin_dsn: str) -> list[str]:
        """Drops the leftovers on the server at `admin_dsn`; returns their names."""
        connection = await asyncpg.connect(admin_dsn)
        try:
            rows = await connection.fetch(
                "SELECT datname FROM pg_database WHERE starts_with(datname, $1)", self.prefix
            )
            leftovers = self.leftovers(row["datname"] for row in rows)
            for name in leftovers:
                await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()
        return leftovers


def _pid_namespace() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except FileNotFoundError:
        # No /proc (macOS): one namespace for the whole machine.
        return 0


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
