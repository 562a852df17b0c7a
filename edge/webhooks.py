"""`POST /webhook/u/{token}`: a TradingView alert in, its IngestWebhook answer out. No business logic.

The contract lives in answer_webhook, which reads the ASGI scope and receive channel only, so that the raw
path ahead of Litestar (edge.webhook_fast_path, which takes nearly every webhook) and the Litestar route
declared here (the OpenAPI operation, and what the raw path leaves to Litestar) answer alike.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, cast

import grpc
from litestar import Request, Response, post
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIType
from litestar.params import FromPath, QueryParameter
from litestar.types import Receive, Scope
from prometheus_client import Counter, Histogram

from apidevs.alerts.v1 import resources_pb2, signal_service_pb2, signal_service_pb2_grpc
from edge.batching import IngestBatcher
from edge.client_certificate import tradingview_certificate_verified
from edge.client_ip import client_ip, is_trusted_proxy
from edge.errors import Answer, error_answer, error_responses, http_status_for, refusal, to_response
from edge.header_limits import WEBHOOK_AUDITS_HEADERS, over_header_limits
from edge.openapi import WebhookOperation, absent_or
from edge.settings import EdgeSettings
from edge.spool import SpoolFullError, WebhookSpool
from mesh.addresses import source_network
from mesh.errors import AlertsError, Failure, NotFoundError, classify_failure
from mesh.grpc import new_request_id
from mesh.logging import request_id_var
from mesh.metrics import LATENCY_BUCKETS

log = logging.getLogger(__name__)

WEBHOOKS = Counter(
    "alerts_webhooks_total", "Webhook calls answered, by HTTP status and reason", ["status", "reason"]
)
WEBHOOK_LATENCY = Histogram(
    "alerts_webhook_latency_seconds", "Webhook answer latency at the edge", buckets=LATENCY_BUCKETS
)

# TradingView re-sends a 5xx'd alert 5 s later whatever this says; other callers may wait as told.
_SPOOL_FULL_RETRY_AFTER_SECONDS = 5

# The shape signal_service/tokens.py issues (the edge imports no service). Anything else can never be a
# token: it is answered 404 at once and never spooled, so junk cannot take the spool's room.
TOKEN_SHAPE = re.compile(r"whk_[A-Za-z0-9_-]{43}")
# TradingView's chart layout ids (the `/chart/<id>/` of a layout URL) are short and URL-safe; the id is
# stored on every signal and put in the capture URL, so nothing else is taken.
CHART_SHAPE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_INVALID_CHART_MESSAGE = "chart must be a TradingView layout id: 1 to 64 letters, digits, '_' or '-'"

_STATUS_NAMES = {
    value.number: value.name.removeprefix("SCREENSHOT_STATUS_").lower()
    for value in resources_pb2.ScreenshotStatus.DESCRIPTOR.values
}


class ClientDisconnected(Exception):
    """The client went away before its body had arrived whole."""


async def read_body(receive: Receive, keep: int, read_at_most: int) -> tuple[bytes, int]:
    """The first `keep` bytes and the size seen; stops reading past `read_at_most`."""
    kept = b""
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = cast(bytes, message.get("body", b""))
        size += len(chunk)
        if len(kept) < keep:
            # A body that comes in one message (nearly all do) is kept without a copy.
            kept = chunk[:keep] if not kept else kept + chunk[: keep - len(kept)]
        if size > read_at_most or not message.get("more_body", False):
            return kept, size


@dataclass(frozen=True)
class WebhookAccepted:
    success: bool
    signal_id: str
    screenshot_status: str
    # Seconds until the screenshot is likely ready.
    estimated_wait: int
    # True when this body was already received within the dedupe window; signal_id is then the first's.
    duplicate: bool


@dataclass(frozen=True)
class WebhookQueued:
    success: bool
    queued: bool
    request_id: str


_REFUSALS = error_responses(
    (400, 401, 403, 404, 408, 413, 429, 502, 503),
    {
        400: "The body did not arrive whole (incomplete_body), `chart` is not a TradingView layout id "
        "(invalid_chart), or the signal service refused the request (invalid_argument)",
        # Only when the edge's own service key is refused: a deployment fault, not the caller's.
        401: "The signal service does not accept the edge's key (unauthenticated)",
        403: "The webhook is disabled (webhook_disabled) or the source address is not allowed "
        "(ip_not_allowed)",
        404: "Unknown or rotated token (not_found); the answer never says whether it existed",
        413: "Body over 64 KiB (body_too_large)",
        502: "The signal service's answer could not be carried (response_too_large)",
        503: "The signal service is away and the spool is full (unavailable); see Retry-After",
    },
)


# Edge refusals reported for auditing; referenced until done so the event loop does not drop them.
_REFUSAL_REPORTS: set[asyncio.Task[None]] = set()
_REFUSAL_REPORT_TIMEOUT_SECONDS = 5.0
_MAX_REPORTED_USER_AGENT = 512


def _refuse(
    state: State,
    ingest: signal_service_pb2.IngestWebhookRequest,
    status_code: int,
    error: str,
    message: str | None = None,
) -> tuple[Answer, str]:
    """Answers at once, and reports the refusal to the signal service for the audit log in the background
    (every webhook call is audited; a client that floods headers or trickles its body waits for nothing)."""
    _report(state, ingest, error)
    return _refusal(status_code, error, message)


def _report(state: State, ingest: signal_service_pb2.IngestWebhookRequest, reason: str) -> None:
    ingest.edge_refusal = reason.upper()
    task = asyncio.create_task(_report_refusal(state.signal_stub, ingest))
    _REFUSAL_REPORTS.add(task)
    task.add_done_callback(_REFUSAL_REPORTS.discard)


async def _report_refusal(
    stub: signal_service_pb2_grpc.SignalServiceAsyncStub, ingest: signal_service_pb2.IngestWebhookRequest
) -> None:
    try:
        await stub.IngestWebhook(ingest, timeout=_REFUSAL_REPORT_TIMEOUT_SECONDS)
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
            log.warning(
                "edge refusal not audited", extra={"reason": ingest.edge_refusal, "code": exc.code().name}
            )


def _refusal(status_code: int, error: str, message: str | None = None) -> tuple[Answer, str]:
    """An answer the edge gives on its own; the connection is closed, as the rest of the body is unread."""
    return refusal(status_code, error, {"Connection": "close"}, message), error


async def _spool(
    state: State,
    ingest: signal_service_pb2.IngestWebhookRequest,
    request_id: str,
    reason: str = "queued",
) -> tuple[Answer, str]:
    """The signal service is away or behind: keep the alert on disk for the replayer and say so with 202."""
    spool: WebhookSpool = state.spool
    try:
        await spool.append(ingest, request_id=request_id, source=source_network(ingest.source_ip))
    except SpoolFullError as exc:
        log.error("webhook spool refused a request", extra={"error": str(exc)})
        headers = {"Retry-After": str(_SPOOL_FULL_RETRY_AFTER_SECONDS)}
        return refusal(503, "unavailable", headers), "spool_full"
    state.spool_replayer.kick()
    return Answer(202, {"success": True, "queued": True, "request_id": request_id}, {}), reason


@post(
    "/webhook/u/{token:str}",
    summary="Receive a TradingView alert",
    description="Any body TradingView sends (text/plain or application/json), at most 64 KiB.",
    tags=["webhooks"],
    operation_id="ingestWebhook",
    # The handler reads the body itself (with its own limits), so Litestar cannot see it to declare it.
    operation_class=WebhookOperation,
    request_max_body_size=None,
    status_code=200,
    opt={WEBHOOK_AUDITS_HEADERS: True},
    responses={
        202: ResponseSpec(
            data_container=WebhookQueued,
            description=(
                "The signal service is away or behind: the alert is kept on disk and stored when it is taken"
            ),
        ),
        **_REFUSALS,
    },
)
async def receive_webhook(
    request: Request[Any, Any, Any],
    token: FromPath[str],
    chart: Annotated[
        str | None,
        QueryParameter(
            description="The TradingView chart layout to capture; the user's default chart when absent",
            schema_extra=absent_or(OpenAPIType.STRING),
        ),
    ] = None,
) -> Response[WebhookAccepted]:
    url = WebhookUrl(token, chart, list(request.query_params.multi_items()))
    return to_response(await answer_webhook(request.app.state, request.scope, request.receive, url))


@dataclass(frozen=True, slots=True)
class WebhookUrl:
    """What a webhook's URL says: its token, the chart it asks for, and every query parameter (the chart's
    among them)."""

    token: str
    chart: str | None
    query: list[tuple[str, str]]


async def answer_webhook(state: State, scope: Scope, receive: Receive, url: WebhookUrl) -> Answer:
    """The answer to one webhook, counted, timed and logged, with its X-Request-ID."""
    started = time.perf_counter()
    request_id = new_request_id()
    request_id_var.set(request_id)
    answer, reason = await _answer(state, scope, receive, url, request_id)
    elapsed = time.perf_counter() - started
    WEBHOOKS.labels(str(answer.status), reason).inc()
    WEBHOOK_LATENCY.observe(elapsed)
    # Never the token (it is the credential) nor the body; the signal service logs the stored signal.
    log.info(
        "webhook answered",
        extra={"status": answer.status, "reason": reason, "ms": round(elapsed * 1000, 2)},
    )
    return Answer(answer.status, answer.body, {**answer.headers, "X-Request-ID": request_id})


@dataclass(slots=True)
class _Head:
    """What the answer reads from the request's headers, gathered in one pass over them."""

    count: int = 0
    size: int = 0
    content_type: str = ""
    user_agent: str = ""
    # Proxies may add their own header line rather than extend the client's: all of them are read.
    forwarded_for: str = ""
    client_certificates: tuple[str, ...] = ()

    @classmethod
    def read(cls, headers: Iterable[tuple[bytes, bytes]]) -> _Head:
        head = cls()
        forwarded: list[str] = []
        certificates: list[str] = []
        for name, value in headers:
            head.count += 1
            head.size += len(name) + len(value)
            if name == b"content-type":
                head.content_type = head.content_type or value.decode("latin-1")
            elif name == b"user-agent":
                head.user_agent = head.user_agent or value.decode("latin-1")
            elif name == b"x-forwarded-for":
                forwarded.append(value.decode("latin-1"))
            elif name == b"x-forwarded-client-cert":
                certificates.append(value.decode("latin-1"))
        head.forwarded_for = ",".join(forwarded)
        head.client_certificates = tuple(certificates)
        return head


def _tradingview_certificate(peer: str, head: _Head, settings: EdgeSettings) -> bool:
    return (
        settings.trust_forwarded_client_cert
        and is_trusted_proxy(peer, settings.trusted_proxies)
        and tradingview_certificate_verified(list(head.client_certificates))
    )


async def _answer(
    state: State, scope: Scope, receive: Receive, url: WebhookUrl, request_id: str
) -> tuple[Answer, str]:
    """The answer to one webhook and the reason it is counted under."""
    settings: EdgeSettings = state.settings
    token, chart = url.token, url.chart
    head = _Head.read(scope["headers"])
    client = scope.get("client")
    peer = client[0] if client else ""
    seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
    ingest = signal_service_pb2.IngestWebhookRequest(
        webhook_token=token,
        chart_id=chart or "",
        content_type=head.content_type,
        source_ip=client_ip(peer, head.forwarded_for, settings.trusted_proxies),
        user_agent=head.user_agent[:_MAX_REPORTED_USER_AGENT],
    )
    ingest.received_at.seconds = seconds
    ingest.received_at.nanos = nanos
    # Set only when there is one: an empty map given to the constructor costs more than the rest of it.
    if query := {key: value for key, value in url.query if key != "chart"}:
        ingest.query.update(query)
    ingest.tradingview_client_certificate_verified = _tradingview_certificate(peer, head, settings)
    if over_header_limits(head.count, head.size, settings):
        return _refuse(state, ingest, 431, "headers_too_large")
    if TOKEN_SHAPE.fullmatch(token) is None:
        _report(state, ingest, "malformed_token")
        # Exactly the signal service's 404 for an unknown token: the answer never tells one from the other.
        return error_answer(NotFoundError("unknown webhook")), "malformed_token"
    if chart and CHART_SHAPE.fullmatch(chart) is None:
        ingest.chart_id = ""
        return _refuse(state, ingest, 400, "invalid_chart", _INVALID_CHART_MESSAGE)
    try:
        # uvicorn times out idle connections, not slow bodies: a client trickling its body is cut here.
        async with asyncio.timeout(settings.body_read_timeout_seconds):
            body, size = await read_body(receive, settings.webhook_body_limit + 1, settings.max_read_bytes)
    except TimeoutError:
        return _refuse(state, ingest, 408, "body_timeout")
    except ClientDisconnected:
        # Nobody is left to answer; the refusal is for the audit log.
        return _refuse(state, ingest, 400, "incomplete_body")
    ingest.body = body[: settings.webhook_body_limit]
    ingest.body_size = size
    ingest.request_id = request_id
    batcher: IngestBatcher = state.ingest_batcher
    if 0 < settings.shed_after_queue_delay_seconds < batcher.queue_delay_seconds():
        return await _spool(state, ingest, request_id, reason="shed")
    try:
        async with asyncio.timeout(settings.ingest_timeout_seconds):
            answer = await batcher.ingest(ingest)
    except TimeoutError:
        return await _spool(state, ingest, request_id)
    except AlertsError as error:
        # The signal service away: keep the request for it (a refusal is answered, not spooled).
        if classify_failure(error) is Failure.PEER_AWAY:
            return await _spool(state, ingest, request_id)
        return error_answer(error), http_status_for(error)[1]
    state.spool_replayer.signal_service_answered()
    accepted = {
        "success": True,
        "signal_id": answer.signal_id,
        "screenshot_status": _STATUS_NAMES.get(answer.screenshot_status, "pending"),
        "estimated_wait": answer.estimated_wait_seconds,
        "duplicate": answer.duplicate,
    }
    return Answer(200, accepted, {}), "duplicate" if answer.duplicate else "accepted"
