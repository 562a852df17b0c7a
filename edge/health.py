"""Health: liveness (the process answers), readiness (the signal service answers), and the full picture."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import grpc
from grpc_health.v1 import health_pb2
from litestar import Request, Response, get
from litestar.openapi.datastructures import ResponseSpec
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from apidevs.alerts.v1 import signal_service_pb2, signal_service_pb2_grpc
from edge.errors import error_responses

_CHECK_TIMEOUT_SECONDS = 1.0


class HealthChecker(Protocol):
    """What the edge calls on a ``health_pb2_grpc.HealthStub`` (whose published stubs omit its methods)."""

    Check: grpc.aio.UnaryUnaryMultiCallable[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse]


async def _grpc_serving(stub: HealthChecker) -> bool:
    try:
        answer = await stub.Check(health_pb2.HealthCheckRequest(), timeout=_CHECK_TIMEOUT_SECONDS)
    except grpc.aio.AioRpcError:
        return False
    return answer.status == health_pb2.HealthCheckResponse.SERVING


@dataclass
class LiveOut:
    status: Literal["ok"]


@dataclass
class ReadyOut:
    status: Literal["ok", "unavailable"]


@dataclass
class HealthChecksOut:
    signal_service: bool
    database: bool
    broker: bool
    storage_service: bool


@dataclass
class HealthOut:
    status: Literal["ok", "degraded"]
    # From the signal service; null while it does not answer.
    queue_length: int | None
    active_workers: int | None
    outbox_backlog: int | None
    # Seconds since this edge process started.
    uptime: float
    checks: HealthChecksOut


@get(
    "/health/live",
    summary="Liveness",
    tags=["health"],
    operation_id="liveness",
    responses=error_responses(()),
)
async def live() -> LiveOut:
    return LiveOut(status="ok")


@get(
    "/health/ready",
    summary="Readiness: the signal service answers",
    tags=["health"],
    operation_id="readiness",
    responses={
        503: ResponseSpec(
            ReadyOut, description="The signal service does not answer", generate_examples=False
        ),
        **error_responses(()),
    },
)
async def ready(request: Request[Any, Any, Any]) -> Response[ReadyOut]:
    serving = await _grpc_serving(request.app.state.signal_health)
    return Response(ReadyOut(status="ok" if serving else "unavailable"), status_code=200 if serving else 503)


@get(
    "/health",
    summary="Dependencies, capture backlog and uptime",
    tags=["health"],
    operation_id="health",
    responses={
        # The health report itself, not an error: it says which dependency is down.
        503: ResponseSpec(HealthOut, description="A dependency is down", generate_examples=False),
        **error_responses(()),
    },
)
async def health(request: Request[Any, Any, Any]) -> Response[HealthOut]:
    state = request.app.state
    storage_ok, status = await asyncio.gather(_grpc_serving(state.storage_health), _service_status(request))
    checks = HealthChecksOut(
        signal_service=status is not None,
        database=bool(status and status.database_ok),
        broker=bool(status and status.broker_ok),
        storage_service=storage_ok,
    )
    healthy = all(vars(checks).values())
    body = HealthOut(
        status="ok" if healthy else "degraded",
        queue_length=status.queue_length if status else None,
        active_workers=status.active_workers if status else None,
        outbox_backlog=status.outbox_backlog if status else None,
        uptime=round(time.monotonic() - state.started_monotonic, 3),
        checks=checks,
    )
    return Response(body, status_code=200 if healthy else 503, headers={"Cache-Control": "no-store"})


async def _service_status(
    request: Request[Any, Any, Any],
) -> signal_service_pb2.GetServiceStatusResponse | None:
    stub: signal_service_pb2_grpc.SignalServiceAsyncStub = request.app.state.signal_stub
    try:
        return await stub.GetServiceStatus(
            signal_service_pb2.GetServiceStatusRequest(), timeout=_CHECK_TIMEOUT_SECONDS
        )
    except grpc.aio.AioRpcError:
        return None


@get("/metrics", summary="Prometheus metrics", tags=["health"], include_in_schema=False)
async def metrics() -> Response[Any]:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
