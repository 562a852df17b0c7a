"""How commands reach the signal service and the database, and how failing to reach them reads.

An operator running a command against a stopped service, an unreachable database or a configuration
without its secret gets one line naming what is missing, never a traceback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import grpc
from pydantic import ValidationError

from mesh.errors import from_rpc_error
from mesh.settings import CommonSettings

_T = TypeVar("_T")

_UNREACHABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class CommandError(Exception):
    """A failure the command reports as one line on stderr, with exit status 1."""


def settings_error(error: ValidationError) -> CommandError:
    """The configuration's problems by variable name; pydantic's own text would echo the values (secrets)."""
    problems = []
    for problem in error.errors(include_url=False, include_input=False):
        names = ", ".join(f"ALERTS_{str(part).upper()}" for part in problem["loc"])
        message = str(problem["msg"]).removeprefix("Value error, ")
        problems.append(f"{names}: {message}" if names else message)
    return CommandError(f"configuration: {'; '.join(problems)}")


def signal_service_client() -> tuple[str, str]:
    """Where the signal service is and which key to present: the environment, else a running `alerts dev`."""
    from alerts.dev import read_dev_state

    settings = CommonSettings()
    if settings.service_api_key:
        return settings.signal_addr, settings.service_api_key.get_secret_value()
    state = read_dev_state(settings.data_dir)
    if not state.get("api_key"):
        raise CommandError(
            "no API key for the signal service: set ALERTS_SERVICE_API_KEY (or start `alerts dev`, "
            f"whose key is read from {settings.data_dir}/)"
        )
    return state.get("signal_addr", settings.signal_addr), state["api_key"]


def public_url() -> str:
    """Where browsers reach the edge: ALERTS_PUBLIC_URL, else a running `alerts dev`'s edge."""
    from alerts.dev import read_dev_state

    settings = CommonSettings()
    if settings.public_url:
        return settings.external_url
    return read_dev_state(settings.data_dir).get("edge_url") or settings.external_url


def call_signal_service(address: str, call: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Runs one client conversation; a refusal reads as the service put it."""
    try:
        return asyncio.run(call())
    except grpc.aio.AioRpcError as exc:
        if exc.code() in _UNREACHABLE:
            raise CommandError(
                f"the signal service at {address} is unreachable ({exc.code().name}): is it running? "
                "(ALERTS_SIGNAL_ADDR)"
            ) from None
        if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
            raise CommandError(
                f"the signal service at {address} refused the API key (ALERTS_SERVICE_API_KEY)"
            ) from None
        error = from_rpc_error(exc)
        reason = f" ({error.reason})" if error.reason else ""
        raise CommandError(f"{exc.code().name}{reason}: {error}") from None


def call_rpc(
    stub: Callable[[grpc.aio.Channel], Any], method: str, request: Any, *, timeout: float | None
) -> Any:
    """One call of `method` on the signal service's `stub` (a generated stub class), answered as
    call_signal_service answers."""
    from mesh.grpc import open_channel

    address, key = signal_service_client()

    async def call() -> Any:
        async with open_channel(address, key) as channel:
            return await getattr(stub(channel), method)(request, timeout=timeout)

    return call_signal_service(address, call)


def require_database_url(database_url: str) -> str:
    if not database_url:
        raise CommandError("no database configured: set ALERTS_DATABASE_URL (only `alerts dev` embeds one)")
    return database_url


def run_database_job(database_url: str, job: Callable[[], _T]) -> _T:
    """Runs `job`; a database that cannot be reached, refuses the connection or fails the job is one line
    naming it (without its password)."""
    import asyncpg
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    try:
        return job()
    except (OSError, asyncpg.PostgresError, sqlalchemy.exc.DBAPIError) as exc:
        cause = exc.orig if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.orig else exc
        reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        where = make_url(database_url).render_as_string(hide_password=True)
        raise CommandError(f"cannot use the database at {where}: {reason}") from None


def run_database_coroutine(database_url: str, job: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    return run_database_job(database_url, lambda: asyncio.run(job()))
