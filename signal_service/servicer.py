"""gRPC servicers: proto in, domain call, proto out. No logic lives here."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc
from google.protobuf import json_format, struct_pb2, timestamp_pb2

from apidevs.alerts.v1 import (
    resources_pb2,
    signal_service_pb2,
    signal_service_pb2_grpc,
    user_service_pb2,
    user_service_pb2_grpc,
)
from mesh.auth import current_principal, ensure_can_access_user, ensure_unscoped
from mesh.errors import InvalidArgumentError, to_rpc_status
from mesh.grpc import caller_error
from mesh.logging import request_id_var
from mesh.roles import ensure_edge_fields_from_edge
from signal_service.events import EventFeed, StoredEvent, format_cursor
from signal_service.models import EventType, ScreenshotStatus, SignalResult
from signal_service.repository import SignalFilter, SignalRow
from signal_service.service import (
    CaptureCoordinator,
    IngestCommand,
    SignalOutcomes,
    SignalReader,
    UserManager,
    UserView,
    WebhookIngestor,
    require_uuid,
)
from signal_service.sessions import SessionChecks
from signal_service.status import StatusReporter
from signal_service.storage_links import ScreenshotLinks

log = logging.getLogger(__name__)

# Bounds one BatchIngestWebhooks call's memory and its share of the event loop.
MAX_INGEST_BATCH = 1000

_PLAN_TO_PROTO = {
    "free": resources_pb2.PLAN_FREE,
    "basic": resources_pb2.PLAN_BASIC,
    "pro": resources_pb2.PLAN_PRO,
    "premium": resources_pb2.PLAN_PREMIUM,
}
_PLAN_FROM_PROTO = {value: key for key, value in _PLAN_TO_PROTO.items()}
_SCREENSHOT_TO_PROTO = {
    ScreenshotStatus.PENDING: resources_pb2.SCREENSHOT_STATUS_PENDING,
    ScreenshotStatus.PROCESSING: resources_pb2.SCREENSHOT_STATUS_PROCESSING,
    ScreenshotStatus.COMPLETED: resources_pb2.SCREENSHOT_STATUS_COMPLETED,
    ScreenshotStatus.FAILED: resources_pb2.SCREENSHOT_STATUS_FAILED,
    ScreenshotStatus.SKIPPED: resources_pb2.SCREENSHOT_STATUS_SKIPPED,
    ScreenshotStatus.EXPIRED: resources_pb2.SCREENSHOT_STATUS_EXPIRED,
}
_SCREENSHOT_FROM_PROTO = {value: key for key, value in _SCREENSHOT_TO_PROTO.items()}
_RESULT_TO_PROTO = {
    SignalResult.PENDING: resources_pb2.SIGNAL_RESULT_PENDING,
    SignalResult.WIN: resources_pb2.SIGNAL_RESULT_WIN,
    SignalResult.LOSS: resources_pb2.SIGNAL_RESULT_LOSS,
    SignalResult.SKIP: resources_pb2.SIGNAL_RESULT_SKIP,
}
_RESULT_FROM_PROTO = {value: key for key, value in _RESULT_TO_PROTO.items()}
_EVENT_TYPE_TO_PROTO = {
    EventType.CREATED: resources_pb2.SIGNAL_EVENT_TYPE_CREATED,
    EventType.SCREENSHOT_UPDATED: resources_pb2.SIGNAL_EVENT_TYPE_SCREENSHOT_UPDATED,
    EventType.OUTCOME_UPDATED: resources_pb2.SIGNAL_EVENT_TYPE_OUTCOME_UPDATED,
    EventType.TRADINGVIEW_SESSION_UPDATED: resources_pb2.SIGNAL_EVENT_TYPE_TRADINGVIEW_SESSION_UPDATED,
}
_PARSE_TO_PROTO = {
    "complete": resources_pb2.PARSE_STATUS_COMPLETE,
    "partial": resources_pb2.PARSE_STATUS_PARTIAL,
    "failed": resources_pb2.PARSE_STATUS_FAILED,
}


def timestamp(moment: datetime | None) -> timestamp_pb2.Timestamp | None:
    if moment is None:
        return None
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(moment.astimezone(UTC))
    return message


def from_timestamp(message: timestamp_pb2.Timestamp, present: bool) -> datetime | None:
    return message.ToDatetime(tzinfo=UTC) if present else None


def struct(values: dict) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    json_format.ParseDict(values, message)
    return message


def signal_to_proto(row: SignalRow, url: str = "") -> resources_pb2.Signal:
    signal, screenshot = row.signal, row.screenshot
    message = resources_pb2.Signal(
        signal_id=str(signal.id),
        user_id=str(signal.user_id),
        chart_id=signal.chart_id or "",
        indicator=signal.indicator or "",
        ticker=signal.ticker or "",
        exchange=signal.exchange or "",
        symbol=signal.symbol or "",
        price="" if signal.price is None else str(signal.price),
        signal_type=signal.signal_type or "",
        interval=signal.interval or "",
        alert_time=timestamp(signal.alert_time),
        parse_status=_PARSE_TO_PROTO.get(signal.parse_status, resources_pb2.PARSE_STATUS_UNSPECIFIED),
        parse_problems=list(signal.parse_problems or ()),
        extra=struct(signal.extra or {}),
        raw_text=signal.raw_body.decode("utf-8", errors="replace").replace("\x00", ""),
        content_type=signal.content_type or "",
        screenshot_status=_SCREENSHOT_TO_PROTO[ScreenshotStatus(signal.screenshot_status)],
        result=_RESULT_TO_PROTO[SignalResult(signal.result)],
        profit_loss="" if signal.profit_loss is None else str(signal.profit_loss),
        notes=signal.notes or "",
        created_at=timestamp(signal.created_at),
        updated_at=timestamp(signal.updated_at),
    )
    if screenshot is not None:
        message.screenshot_object_key = screenshot.object_key or ""
        message.screenshot_error = screenshot.error or ""
        if screenshot.completed_at is not None and screenshot.status == ScreenshotStatus.COMPLETED:
            message.screenshot_completed_at.CopyFrom(timestamp(screenshot.completed_at))
        if screenshot.status == ScreenshotStatus.COMPLETED:
            message.screenshot_url = url
    return message


def user_to_proto(view: UserView) -> resources_pb2.User:
    user, config = view.user, view.config
    return resources_pb2.User(
        user_id=str(user.id),
        external_id=user.external_id or "",
        plan=_PLAN_TO_PROTO[user.plan],
        webhook_enabled=user.webhook_enabled,
        default_chart_id=config.default_chart_id or "",
        ip_allowlist=list(config.ip_allowlist or ()),
        notification_preferences=struct(config.notification_preferences or {}),
        signals_quota=user.signals_quota,
        signals_used=user.signals_used,
        quota_reset_at=timestamp(user.quota_reset_at),
        tradingview_session=resources_pb2.TradingViewSession(
            configured=config.tv_session_ciphertext is not None,
            checked=config.tv_cookies_checked_at is not None,
            valid=bool(config.tv_cookies_valid) and config.tv_cookies_checked_at is not None,
            checked_at=timestamp(config.tv_cookies_checked_at),
            changed_at=timestamp(config.tv_cookies_changed_at),
        ),
        created_at=timestamp(user.created_at),
        updated_at=timestamp(user.updated_at),
    )


def session_state_to_proto(state: dict) -> resources_pb2.TradingViewSession:
    """A TRADINGVIEW_SESSION_UPDATED event's payload (signal_service.sessions.session_state)."""
    message = resources_pb2.TradingViewSession(
        configured=bool(state.get("configured")),
        checked=bool(state.get("checked")),
        valid=bool(state.get("valid")),
    )
    for name in ("checked_at", "changed_at"):
        if state.get(name):
            getattr(message, name).CopyFrom(timestamp(datetime.fromisoformat(state[name])))
    return message


def plan_from_proto(plan: int) -> str:
    return _PLAN_FROM_PROTO.get(plan, "")


class SignalServicer(signal_service_pb2_grpc.SignalServiceServicer):
    def __init__(
        self,
        *,
        ingestor: WebhookIngestor,
        reader: SignalReader,
        captures: CaptureCoordinator,
        links: ScreenshotLinks,
        status: StatusReporter,
        outcomes: SignalOutcomes,
        feed: EventFeed,
        sessions: SessionChecks,
    ) -> None:
        self._sessions = sessions
        self._outcomes = outcomes
        self._feed = feed
        self._status = status
        self._ingestor = ingestor
        self._reader = reader
        self._captures = captures
        self._links = links

    async def _signals_to_proto(self, rows: list[SignalRow]) -> list[resources_pb2.Signal]:
        urls = await self._links.urls(
            row.screenshot.object_key
            for row in rows
            if row.screenshot is not None and row.screenshot.status == ScreenshotStatus.COMPLETED
        )
        return [
            signal_to_proto(row, urls.get(row.screenshot.object_key or "", "") if row.screenshot else "")
            for row in rows
        ]

    async def _events_to_proto(self, batch: list[StoredEvent]) -> list[resources_pb2.SignalEvent]:
        signals = await self._signals_to_proto([stored.row for stored in batch if stored.row is not None])
        by_id = {signal.signal_id: signal for signal in signals}
        messages = []
        for stored in batch:
            event = stored.event
            message = resources_pb2.SignalEvent(
                cursor=format_cursor(event.seq),
                type=_EVENT_TYPE_TO_PROTO[EventType(event.type)],
                occurred_at=timestamp(event.created_at),
                user_id=str(event.user_id),
            )
            if stored.row is not None:
                message.signal.CopyFrom(by_id[str(stored.row.signal.id)])
            if event.type == EventType.TRADINGVIEW_SESSION_UPDATED:
                message.tradingview_session.CopyFrom(session_state_to_proto(event.payload or {}))
            messages.append(message)
        return messages

    async def IngestWebhook(
        self, request: signal_service_pb2.IngestWebhookRequest, context: grpc.aio.ServicerContext
    ) -> signal_service_pb2.IngestWebhookResponse:
        ensure_unscoped()
        ensure_edge_fields_from_edge([request])
        return await self._ingest(request)

    async def BatchIngestWebhooks(
        self, request: signal_service_pb2.BatchIngestWebhooksRequest, context: grpc.aio.ServicerContext
    ) -> signal_service_pb2.BatchIngestWebhooksResponse:
        ensure_unscoped()
        ensure_edge_fields_from_edge(request.requests)
        if len(request.requests) > MAX_INGEST_BATCH:
            raise InvalidArgumentError(
                f"at most {MAX_INGEST_BATCH} webhooks per call", reason="BATCH_TOO_LARGE"
            )
        # All at once: their stores meet in the same group commit (signal_service/group_commit.py).
        results = await asyncio.gather(*(self._ingest_result(item) for item in request.requests))
        return signal_service_pb2.BatchIngestWebhooksResponse(results=results)

    async def _ingest_result(
        self, request: signal_service_pb2.IngestWebhookRequest
    ) -> signal_service_pb2.IngestWebhookResult:
        if request.request_id:
            request_id_var.set(request.request_id)
        try:
            return signal_service_pb2.IngestWebhookResult(response=await self._ingest(request))
        except Exception as exc:
            error = caller_error(exc, "BatchIngestWebhooks")
        return signal_service_pb2.IngestWebhookResult(error_status=to_rpc_status(error).SerializeToString())

    async def _ingest(
        self, request: signal_service_pb2.IngestWebhookRequest
    ) -> signal_service_pb2.IngestWebhookResponse:
        received_at = from_timestamp(request.received_at, request.HasField("received_at")) or datetime.now(
            UTC
        )
        result = await self._ingestor.ingest(
            IngestCommand(
                webhook_token=request.webhook_token,
                body=request.body,
                received_at=received_at,
                chart_id=request.chart_id,
                content_type=request.content_type,
                source_ip=request.source_ip,
                user_agent=request.user_agent,
                query=dict(request.query),
                idempotency_key=request.idempotency_key,
                body_size=request.body_size,
                edge_refusal=request.edge_refusal,
            )
        )
        log.info(
            "signal stored",
            extra={
                "signal_id": str(result.signal_id),
                "duplicate": result.duplicate,
                "screenshot_status": result.screenshot_status.value,
            },
        )
        return signal_service_pb2.IngestWebhookResponse(
            signal_id=str(result.signal_id),
            screenshot_status=_SCREENSHOT_TO_PROTO[result.screenshot_status],
            estimated_wait_seconds=result.estimated_wait_seconds,
            duplicate=result.duplicate,
        )

    async def GetSignal(
        self, request: signal_service_pb2.GetSignalRequest, context: grpc.aio.ServicerContext
    ) -> resources_pb2.Signal:
        row = await self._reader.get(request.signal_id)
        ensure_can_access_user(str(row.signal.user_id))
        return (await self._signals_to_proto([row]))[0]

    async def ListSignals(
        self, request: signal_service_pb2.ListSignalsRequest, context: grpc.aio.ServicerContext
    ) -> signal_service_pb2.ListSignalsResponse:
        user_id = require_uuid(request.user_id, "user_id")
        ensure_can_access_user(str(user_id))
        where = SignalFilter(
            user_id=user_id,
            ticker=request.ticker or None,
            indicator=request.indicator or None,
            signal_type=request.signal_type or None,
            result=_RESULT_FROM_PROTO.get(request.result),
            screenshot_status=_SCREENSHOT_FROM_PROTO.get(request.screenshot_status),
            created_after=from_timestamp(request.created_after, request.HasField("created_after")),
            created_before=from_timestamp(request.created_before, request.HasField("created_before")),
        )
        page = await self._reader.list(where, size=request.page_size, page_token=request.page_token)
        return signal_service_pb2.ListSignalsResponse(
            signals=await self._signals_to_proto(page.rows), next_page_token=page.next_page_token
        )

    async def UpdateSignalOutcome(
        self, request: signal_service_pb2.UpdateSignalOutcomeRequest, context: grpc.aio.ServicerContext
    ) -> resources_pb2.Signal:
        row = await self._outcomes.update(
            request.signal_id,
            result=_RESULT_FROM_PROTO.get(request.result),
            profit_loss=request.profit_loss,
            notes=request.notes,
            ensure_access=ensure_can_access_user,
        )
        return (await self._signals_to_proto([row]))[0]

    async def GetUserStats(
        self, request: signal_service_pb2.GetUserStatsRequest, context: grpc.aio.ServicerContext
    ) -> resources_pb2.UserStats:
        user_id = require_uuid(request.user_id, "user_id")
        ensure_can_access_user(str(user_id))
        stats = await self._reader.stats(str(user_id))
        counts = stats.counts
        return resources_pb2.UserStats(
            user_id=stats.user_id,
            total_signals=counts.total_signals,
            this_month=counts.this_month,
            screenshots_pending=counts.screenshots_pending,
            win_rate=stats.win_rate,
            wins=counts.wins,
            losses=counts.losses,
            storage_bytes=counts.storage_bytes,
            storage_objects=counts.storage_objects,
        )

    async def SubscribeSignals(
        self, request: signal_service_pb2.SubscribeSignalsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[resources_pb2.SignalEvent]:
        """Replay after the cursor, then live (see signal_service.events for the guarantees).

        Initial metadata ``x-start-cursor`` is sent once the request is accepted, before any event, so a
        caller can tell "accepted, nothing new yet" from a refusal without waiting for an event.
        """
        user_id = require_uuid(request.user_id, "user_id")
        ensure_can_access_user(str(user_id))
        async with self._feed.subscribe(user_id, request.after_cursor) as subscription:
            await context.send_initial_metadata((("x-start-cursor", subscription.start_cursor),))
            async for batch in subscription.batches():
                for message in await self._events_to_proto(batch):
                    yield message

    async def ClaimCapture(
        self, request: signal_service_pb2.ClaimCaptureRequest, context: grpc.aio.ServicerContext
    ) -> signal_service_pb2.ClaimCaptureResponse:
        ensure_unscoped()
        claim = await self._captures.claim(
            request.signal_id, attempt=request.attempt, worker_id=request.worker_id
        )
        log.info(
            "capture claimed",
            extra={
                "signal_id": request.signal_id,
                "attempt": request.attempt,
                "worker_id": request.worker_id,
                "proceed": claim.proceed,
            },
        )
        return signal_service_pb2.ClaimCaptureResponse(
            proceed=claim.proceed,
            signal=signal_to_proto(claim.row),
            chart_id=claim.chart_id,
            tradingview_session_ciphertext=claim.session_ciphertext,
            plan=_PLAN_TO_PROTO[claim.plan],
        )

    async def ReportCapture(
        self, request: signal_service_pb2.ReportCaptureRequest, context: grpc.aio.ServicerContext
    ) -> resources_pb2.Signal:
        ensure_unscoped()
        status = _SCREENSHOT_FROM_PROTO.get(request.status, ScreenshotStatus.PENDING)
        row = await self._captures.report(
            request.signal_id,
            status=status,
            object_key=request.object_key,
            error=request.error,
            size_bytes=request.size_bytes,
            width=request.width,
            height=request.height,
            duration_ms=request.duration_ms,
        )
        log.info(
            "capture reported",
            extra={
                "signal_id": request.signal_id,
                "status": status.value,
                "error": request.error,
            },
        )
        return (await self._signals_to_proto([row]))[0]

    async def ListFailedCaptures(
        self, request: signal_service_pb2.ListFailedCapturesRequest, context: grpc.aio.ServicerContext
    ) -> signal_service_pb2.ListFailedCapturesResponse:
        if request.user_id:
            ensure_can_access_user(request.user_id)
        else:
            ensure_unscoped()
        page = await self._captures.failed(
            user_id=request.user_id, size=request.page_size, page_token=request.page_token
        )
        return signal_service_pb2.ListFailedCapturesResponse(
            signals=await self._signals_to_proto(page.rows), next_page_token=page.next_page_token
        )

    async def RetryCaptures(
        self, request: signal_service_pb2.RetryCapturesRequest, context: grpc.aio.ServicerContext
    ) -> signal_service_pb2.RetryCapturesResponse:
        ensure_unscoped()
        count = await self._captures.retry(list(request.signal_ids), all_failed=request.all_failed)
        return signal_service_pb2.RetryCapturesResponse(requeued_count=count)

    async def GetServiceStatus(
        self, request: signal_service_pb2.GetServiceStatusRequest, context: grpc.aio.ServicerContext
    ) -> signal_service_pb2.GetServiceStatusResponse:
        ensure_unscoped()
        status = await self._status.status()
        return signal_service_pb2.GetServiceStatusResponse(
            database_ok=status.database_ok,
            broker_ok=status.broker_ok,
            queue_length=sum(status.queue_lengths.values()),
            queue_lengths=status.queue_lengths,
            active_workers=status.active_workers,
            outbox_backlog=status.outbox_backlog,
        )

    async def ClaimSessionCheck(
        self, request: signal_service_pb2.ClaimSessionCheckRequest, context: grpc.aio.ServicerContext
    ) -> signal_service_pb2.ClaimSessionCheckResponse:
        ensure_unscoped()
        claim = await self._sessions.claim(request.user_id, request.check_id)
        response = signal_service_pb2.ClaimSessionCheckResponse(
            proceed=claim.proceed,
            session_version=claim.version,
            tradingview_session_ciphertext=claim.ciphertext,
        )
        if claim.target is not None:
            response.chart_id = claim.target.chart_id
            response.ticker = claim.target.ticker
            response.interval = claim.target.interval
        return response

    async def ReportSessionCheck(
        self, request: signal_service_pb2.ReportSessionCheckRequest, context: grpc.aio.ServicerContext
    ) -> resources_pb2.User:
        ensure_unscoped()
        user, config = await self._sessions.report(
            request.user_id, version=request.session_version, valid=request.valid
        )
        return user_to_proto(UserView(user, config))


class UserServicer(user_service_pb2_grpc.UserServiceServicer):
    def __init__(self, users: UserManager) -> None:
        self._users = users

    async def CreateUser(
        self, request: user_service_pb2.CreateUserRequest, context: grpc.aio.ServicerContext
    ) -> user_service_pb2.CreateUserResponse:
        ensure_unscoped()
        issued = await self._users.create(
            external_id=request.external_id,
            plan=plan_from_proto(request.plan) or "free",
            default_chart_id=request.default_chart_id,
            signals_quota=request.signals_quota,
            ip_allowlist=list(request.ip_allowlist),
            notification_preferences=json_format.MessageToDict(request.notification_preferences),
        )
        return user_service_pb2.CreateUserResponse(
            user=user_to_proto(issued.view),
            webhook_token=issued.webhook_token,
            webhook_url=issued.webhook_url,
        )

    async def GetUser(
        self, request: user_service_pb2.GetUserRequest, context: grpc.aio.ServicerContext
    ) -> resources_pb2.User:
        view = await self._users.get(user_id=request.user_id, external_id=request.external_id)
        current_principal().ensure_can_access(str(view.user.id))
        return user_to_proto(view)

    async def UpdateUser(
        self, request: user_service_pb2.UpdateUserRequest, context: grpc.aio.ServicerContext
    ) -> resources_pb2.User:
        ensure_unscoped()
        source = request.user
        readers = {
            "plan": lambda: plan_from_proto(source.plan),
            "signals_quota": lambda: source.signals_quota,
            "webhook_enabled": lambda: source.webhook_enabled,
            "default_chart_id": lambda: source.default_chart_id,
            "ip_allowlist": lambda: list(source.ip_allowlist),
            "notification_preferences": lambda: json_format.MessageToDict(source.notification_preferences),
        }
        values = {path: readers[path]() if path in readers else None for path in request.update_mask.paths}
        return user_to_proto(await self._users.update(source.user_id, values))

    async def RotateWebhookToken(
        self, request: user_service_pb2.RotateWebhookTokenRequest, context: grpc.aio.ServicerContext
    ) -> user_service_pb2.RotateWebhookTokenResponse:
        ensure_unscoped()
        issued = await self._users.rotate_token(request.user_id, request.grace_period_seconds)
        response = user_service_pb2.RotateWebhookTokenResponse(
            webhook_token=issued.webhook_token, webhook_url=issued.webhook_url
        )
        if issued.previous_token_expires_at is not None:
            response.previous_token_expires_at.CopyFrom(timestamp(issued.previous_token_expires_at))
        return response

    async def SetTradingViewSession(
        self, request: user_service_pb2.SetTradingViewSessionRequest, context: grpc.aio.ServicerContext
    ) -> resources_pb2.User:
        ensure_unscoped()
        view = await self._users.set_tradingview_session(
            request.user_id, request.sessionid, request.sessionid_sign
        )
        return user_to_proto(view)


__all__ = ["SignalServicer", "UserServicer", "signal_to_proto", "user_to_proto"]
