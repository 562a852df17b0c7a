"""`POST /webhook/u/{token}`: a TradingView alert in, one IngestWebhook call out. No business logic."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import grpc
from google.protobuf import timestamp_pb2
from litestar import Request, Response, post
from prometheus_client import Counter, Histogram

from apidevs.alerts.v1 import resources_pb2, signal_service_pb2
from edge.client_ip import client_ip
from edge.errors import error_response, http_status_for
from edge.settings import EdgeSettings
from mesh.errors import from_rpc_error
from mesh.grpc import new_request_id
from mesh.logging import request_id_var
from mesh.metrics import LATENCY_BUCKETS

WEBHOOKS = Counter(
    "alerts_webhooks_total", "Webhook calls answered, by HTTP status and reason", ["status", "reason"]
)
WEBHOOK_LATENCY = Histogram(
    "alerts_webhook_latency_seconds", "Webhook answer latency at the edge", buckets=LATENCY_BUCKETS
)

_STATUS_NAMES = {
    value.number: value.name.removeprefix("SCREENSHOT_STATUS_").lower()
    for value in resources_pb2.ScreenshotStatus.DESCRIPTOR.values
}


async def read_body(request: Request, keep: int, read_at_most: int) -> tuple[bytes, int]:
    """The first `keep` bytes and the size seen; stops reading past `read_at_most`."""
    kept = bytearray()
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if len(kept) < keep:
            kept += chunk[: keep - len(kept)]
        if size > read_at_most:
            break
    return bytes(kept), size


@post(
    "/webhook/u/{token:str}",
    summary="Receive a TradingView alert",
    description="Any body TradingView sends (text/plain or application/json), at most 64 KiB.",
    tags=["webhooks"],
    request_max_body_size=None,
    status_code=200,
)
async def receive_webhook(request: Request, token: str, chart: str | None = None) -> Response:
    started = time.perf_counter()
    request_id = new_request_id()
    request_id_var.set(request_id)
    settings: EdgeSettings = request.app.state.settings
    received_at = datetime.now(UTC)
    body, size = await read_body(request, settings.webhook_body_limit + 1, settings.max_read_bytes)
    sent_at = timestamp_pb2.Timestamp()
    sent_at.FromDatetime(received_at)
    ingest = signal_service_pb2.IngestWebhookRequest(
        webhook_token=token,
        chart_id=chart or "",
        body=body[: settings.webhook_body_limit],
        body_size=size,
        content_type=request.headers.get("content-type", ""),
        source_ip=client_ip(
            request.client.host if request.client else "",
            request.headers.get("x-forwarded-for"),
            settings.trusted_proxies,
        ),
        received_at=sent_at,
        user_agent=request.headers.get("user-agent", ""),
        query={key: value for key, value in request.query_params.items() if key != "chart"},
    )
    try:
        answer = await request.app.state.signal_stub.IngestWebhook(
            ingest, timeout=settings.ingest_timeout_seconds
        )
    except grpc.aio.AioRpcError as exc:
        error = from_rpc_error(exc)
        response = error_response(error)
        WEBHOOKS.labels(str(response.status_code), http_status_for(error)[1]).inc()
    else:
        response = Response(
            {
                "success": True,
                "signal_id": answer.signal_id,
                "screenshot_status": _STATUS_NAMES.get(answer.screenshot_status, "pending"),
                "estimated_wait": answer.estimated_wait_seconds,
                "duplicate": answer.duplicate,
            },
            status_code=200,
        )
        WEBHOOKS.labels("200", "duplicate" if answer.duplicate else "accepted").inc()
    response.headers["X-Request-ID"] = request_id
    WEBHOOK_LATENCY.observe(time.perf_counter() - started)
    return response
