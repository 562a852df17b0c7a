"""The SignalService gRPC servicer: maps proto <-> the signal domains."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import Any

import grpc

from apidevs.alerts.v1 import resources_pb2, signal_service_pb2, signal_service_pb2_grpc
from mesh.auth import current_principal, ensure_unscoped
from mesh.errors import InvalidArgumentError, to_rpc_status
from mesh.grpc import caller_error
from mesh.logging import request_id_var
from mesh.roles import ensure_edge_fields_from_edge
from signal_service.captures.service import CaptureCoordinator
from signal_service.event_messages import (
    REPEATED_ENTRY_OVERHEAD,
    delivery_fields_by_signal,
    event_messages,
    page_event_fields,
    page_screenshot_keys,
    page_signal_ids,
)
from signal_service.events.service import EventFeed, StoredEvent
from signal_service.intake.service import IngestCommand, WebhookIngestor
from signal_service.models import ScreenshotStatus
from signal_service.notifications.service import NotificationLedger, ReportOutcome
from signal_service.proto_mapping import (
    CHANNEL_TO_PROTO,
    KIND_TO_PROTO,
    PLAN_TO_PROTO,
    RESULT_FROM_PROTO,
    SCREENSHOT_FROM_PROTO,
    SCREENSHOT_TO_PROTO,
    delivery_to_proto,
    from_timestamp,
    signal_fields,
    signal_to_proto,
    timestamp,
    user_to_proto,
)
from signal_service.sessions.service import SessionChecks
from signal_service.signals.repository import SignalFilter, SignalRow
from signal_service.signals.service import SignalOutcomes, SignalPage, SignalReader, encode_page_token
from signal_service.status import StatusReporter
from signal_service.storage_links import ScreenshotLinks
from signal_service.users.service import UserView
from signal_service.visibility import ensure_listing_visible, visible_owner, visible_user_id

log = logging.getLogger(__name__)


# Bounds one BatchIngestWebhooks call's memory and its share of the event loop.
MAX_INGEST_BATCH = 1000
# The most events one SubscribeSignals message carries (SubscribeSignalsRequest.max_events_per_message):
# an event store page's worth (signal_service.events).
MAX_EVENTS_PER_MESSAGE = 1000


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
        page_max_bytes: int,
        notifications: NotificationLedger,
    ) -> None:
        self._page_max_bytes = page_max_bytes
        self._notifications = notifications
        self._sessions = sessions
        self._outcomes = outcomes
        self._feed = feed
        self._status = status
        self._ingestor = ingestor
        self._reader = reader
        self._captures = captures
        self._links = links

    async def _signal_fields(self, rows: Iterable[SignalRow]) -> dict[uuid.UUID, dict[str, Any]]:
        """Each signal's message fields by id, with its deliveries and a fresh URL for its COMPLETED
        screenshot."""
        by_id = {row.signal.id: row for row in rows}
        if not by_id:
            return {}
        keys = [
            row.screenshot.object_key
            for row in by_id.values()
            if row.screenshot is not None and row.screenshot.status == ScreenshotStatus.COMPLETED
        ]
        # Side by side: the storage service signs while PostgreSQL reads the deliveries.
        urls, deliveries = await asyncio.gather(
            self._links.urls(keys), self._notifications.deliveries(list(by_id))
        )
        found = {}
        for signal_id, row in by_id.items():
            fields = signal_fields(
                row, urls.get(row.screenshot.object_key or "", "") if row.screenshot else ""
            )
            fields["deliveries"] = [delivery_to_proto(delivery) for delivery in deliveries.get(signal_id, ())]
            found[signal_id] = fields
        return found

    async def _signals_to_proto(self, rows: list[SignalRow]) -> list[resources_pb2.Signal]:
        fields = await self._signal_fields(rows)
        return [resources_pb2.Signal(**fields[row.signal.id]) for row in rows]

    async def _signal_to_proto(self, row: SignalRow) -> resources_pb2.Signal:
        return (await self._signals_to_proto([row]))[0]

    async def _page_to_proto(self, page: SignalPage) -> tuple[list[resources_pb2.Signal], str]:
        """The page's signals and its next_page_token, ended early when the next signal would take the
        response past ``page_max_bytes`` (a page keeps its first signal whatever its size)."""
        messages = await self._signals_to_proto(page.rows)
        used = 0
        for index, message in enumerate(messages):
            used += message.ByteSize() + REPEATED_ENTRY_OVERHEAD
            if used > self._page_max_bytes and index > 0:
                return messages[:index], encode_page_token(page.rows[index - 1])
        return messages, page.next_page_token

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
        # All at once: their stores meet in the same group commit (intake/group_commit.py).
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
                tradingview_client_certificate_verified=request.tradingview_client_certificate_verified,
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
            screenshot_status=SCREENSHOT_TO_PROTO[result.screenshot_status],
            estimated_wait_seconds=result.estimated_wait_seconds,
            duplicate=result.duplicate,
        )

    async def GetSignal(
        self, request: signal_service_pb2.GetSignalRequest, context: grpc.aio.ServicerContext
    ) -> resources_pb2.Signal:
        row = await self._reader.get(request.signal_id, owner=visible_owner())
        return await self._signal_to_proto(row)

    async def ListSignals(
        self, request: signal_service_pb2.ListSignalsRequest, context: grpc.aio.ServicerContext
    ) -> signal_service_pb2.ListSignalsResponse:
        user_id = visible_user_id(request.user_id)
        where = SignalFilter(
            user_id=user_id,
            ticker=request.ticker or None,
            indicator=request.indicator or None,
            signal_type=request.signal_type or None,
            result=RESULT_FROM_PROTO.get(request.result),
            screenshot_status=SCREENSHOT_FROM_PROTO.get(request.screenshot_status),
            created_after=from_timestamp(request.created_after, request.HasField("created_after")),
            created_before=from_timestamp(request.created_before, request.HasField("created_before")),
        )
        page = await self._reader.list(where, size=request.page_size, page_token=request.page_token)
        signals, next_page_token = await self._page_to_proto(page)
        return signal_service_pb2.ListSignalsResponse(signals=signals, next_page_token=next_page_token)

    async def UpdateSignalOutcome(
        self, request: signal_service_pb2.UpdateSignalOutcomeRequest, context: grpc.aio.ServicerContext
    ) -> resources_pb2.Signal:
        row = await self._outcomes.update(
            request.signal_id,
            result=RESULT_FROM_PROTO.get(request.result),
            profit_loss=request.profit_loss,
            notes=request.notes,
            owner=visible_owner(),
        )
        return await self._signal_to_proto(row)

    async def GetUserStats(
        self, request: signal_service_pb2.GetUserStatsRequest, context: grpc.aio.ServicerContext
    ) -> resources_pb2.UserStats:
        user_id = visible_user_id(request.user_id)
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
        user_id = visible_user_id(request.user_id)
        if request.max_events_per_message < 0:
            raise InvalidArgumentError("max_events_per_message must not be negative")
        per_message = min(request.max_events_per_message, MAX_EVENTS_PER_MESSAGE)
        with_urls = not request.omit_screenshot_urls
        user_text = str(user_id)
        key = current_principal().key_fingerprint

        async def outgoing(batch: list[StoredEvent]) -> list[resources_pb2.SignalEvent]:
            # Side by side: the storage service signs while PostgreSQL reads the deliveries.
            urls, deliveries = await asyncio.gather(
                self._links.urls(page_screenshot_keys(batch) if with_urls else ()),
                self._notifications.delivery_records(page_signal_ids(batch)),
            )
            return event_messages(
                page_event_fields(
                    batch, user_id=user_text, urls=urls, deliveries=delivery_fields_by_signal(deliveries)
                ),
                per_message=per_message,
                max_bytes=self._page_max_bytes,
            )

        async with self._feed.subscribe(user_id, request.after_cursor, key=key) as subscription:
            await context.send_initial_metadata((("x-start-cursor", subscription.start_cursor),))
            # Closed here, while the subscription is still registered: it may be preparing a page ahead.
            async with contextlib.aclosing(subscription.batches(outgoing)) as pages:
                async for messages in pages:
                    # A token or runtime key revoked (or expired) since the stream opened delivers no more.
                    current_principal().ensure_still_valid()
                    for message in messages:
                        yield message

    async def ClaimCapture(
        self, request: signal_service_pb2.ClaimCaptureRequest, context: grpc.aio.ServicerContext
    ) -> signal_service_pb2.ClaimCaptureResponse:
        ensure_unscoped()
        claim = await self._captures.claim(
            request.signal_id,
            attempt=request.attempt,
            worker_id=request.worker_id,
            resumes_claim=request.resumes_claim,
        )
        log.info(
            "capture claimed",
            extra={
                "signal_id": request.signal_id,
                "attempt": request.attempt,
                "worker_id": request.worker_id,
                "proceed": claim.proceed,
                "claim": claim.claim,
            },
        )
        return signal_service_pb2.ClaimCaptureResponse(
            proceed=claim.proceed,
            signal=signal_to_proto(claim.row),
            chart_id=claim.chart_id,
            tradingview_session_ciphertext=claim.session_ciphertext,
            plan=PLAN_TO_PROTO[claim.plan],
            object_key=claim.object_key,
            claim=claim.claim,
        )

    async def ReportCapture(
        self, request: signal_service_pb2.ReportCaptureRequest, context: grpc.aio.ServicerContext
    ) -> resources_pb2.Signal:
        ensure_unscoped()
        status = SCREENSHOT_FROM_PROTO.get(request.status, ScreenshotStatus.PENDING)
        row = await self._captures.report(
            request.signal_id,
            status=status,
            object_key=request.object_key,
            error=request.error,
            size_bytes=request.size_bytes,
            width=request.width,
            height=request.height,
            duration_ms=request.duration_ms,
            claim=request.claim,
        )
        log.info(
            "capture reported",
            extra={
                "signal_id": request.signal_id,
                "status": status.value,
                "error": request.error,
                "claim": request.claim,
            },
        )
        return await self._signal_to_proto(row)

    async def ListFailedCaptures(
        self, request: signal_service_pb2.ListFailedCapturesRequest, context: grpc.aio.ServicerContext
    ) -> signal_service_pb2.ListFailedCapturesResponse:
        ensure_listing_visible(request.user_id)
        page = await self._captures.failed(
            user_id=request.user_id, size=request.page_size, page_token=request.page_token
        )
        signals, next_page_token = await self._page_to_proto(page)
        return signal_service_pb2.ListFailedCapturesResponse(signals=signals, next_page_token=next_page_token)

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

    async def ClaimNotification(
        self, request: signal_service_pb2.ClaimNotificationRequest, context: grpc.aio.ServicerContext
    ) -> signal_service_pb2.ClaimNotificationResponse:
        ensure_unscoped()
        claim = await self._notifications.claim(
            request.signal_id,
            worker_id=request.worker_id,
            claim_id=request.claim_id,
            screenshot_wait_seconds=request.screenshot_wait_seconds,
            lease_seconds=request.lease_seconds,
        )
        response = signal_service_pb2.ClaimNotificationResponse(
            signal=signal_to_proto(claim.row),
            retry_after_seconds=claim.retry_after_seconds,
            secrets_ciphertext=claim.secrets_ciphertext,
            waiting_for_signal_id=claim.waiting_for_signal_id,
            next_signal_ids=list(dict.fromkeys(claim.next_signal_ids)),
        )
        for task in claim.tasks:
            delivery = task.delivery
            response.tasks.append(
                signal_service_pb2.NotificationTask(
                    delivery_id=delivery.id,
                    channel=CHANNEL_TO_PROTO[delivery.channel],
                    kind=KIND_TO_PROTO[delivery.kind],
                    target=task.target,
                    attempts=delivery.attempts,
                    with_photo=task.with_photo,
                    screenshot_object_key=task.screenshot_object_key,
                    alert_message_id=task.alert_message_id,
                    alert_with_photo=task.alert_with_photo,
                    created_at=timestamp(delivery.due_since),
                )
            )
        return response

    async def ReportNotification(
        self, request: signal_service_pb2.ReportNotificationRequest, context: grpc.aio.ServicerContext
    ) -> signal_service_pb2.ReportNotificationResponse:
        ensure_unscoped()
        recorded, delivery = await self._notifications.report(
            request.delivery_id,
            claim_id=request.claim_id,
            outcome=_REPORT_OUTCOMES.get(request.outcome, ""),
            provider_message_id=request.provider_message_id,
            error=request.error,
            with_photo=request.with_photo,
        )
        log.info(
            "notification reported",
            extra={
                "delivery_id": request.delivery_id,
                "outcome": _REPORT_OUTCOMES.get(request.outcome, ""),
                "recorded": recorded,
                "error": request.error[:200],
            },
        )
        return signal_service_pb2.ReportNotificationResponse(
            recorded=recorded, delivery=delivery_to_proto(delivery)
        )

    async def ListFailedNotifications(
        self, request: signal_service_pb2.ListFailedNotificationsRequest, context: grpc.aio.ServicerContext
    ) -> signal_service_pb2.ListFailedNotificationsResponse:
        ensure_listing_visible(request.user_id)
        page = await self._notifications.failed(
            user_id=request.user_id, size=request.page_size, page_token=request.page_token
        )
        return signal_service_pb2.ListFailedNotificationsResponse(
            deliveries=[delivery_to_proto(delivery) for delivery in page.deliveries],
            next_page_token=page.next_page_token,
        )

    async def RetryNotifications(
        self, request: signal_service_pb2.RetryNotificationsRequest, context: grpc.aio.ServicerContext
    ) -> signal_service_pb2.RetryNotificationsResponse:
        ensure_unscoped()
        count = await self._notifications.retry(list(request.signal_ids), all_failed=request.all_failed)
        return signal_service_pb2.RetryNotificationsResponse(requeued_count=count)


_REPORT_OUTCOMES = {
    signal_service_pb2.DELIVERY_REPORT_OUTCOME_DELIVERED: ReportOutcome.DELIVERED,
    signal_service_pb2.DELIVERY_REPORT_OUTCOME_RETRY: ReportOutcome.RETRY,
    signal_service_pb2.DELIVERY_REPORT_OUTCOME_FAILED: ReportOutcome.FAILED,
    signal_service_pb2.DELIVERY_REPORT_OUTCOME_DEAD: ReportOutcome.DEAD,
    signal_service_pb2.DELIVERY_REPORT_OUTCOME_RELEASED: ReportOutcome.RELEASED,
}
