"""The TradingView session check job: one signed HTTP request per user, no browser.

signal_service queues it (signal_service/sessions/service.py) as ``(SESSION_CHECK_QUEUE,
SESSION_CHECK_ACTOR)`` with ``args=(user_id,)``, periodically for active users and once when new cookies are
set, at priority 100, below every capture, so checks never take capacity from captures. The verdict comes
from :func:`capture_service.session_probe.probe_session`: ``valid`` and ``invalid`` are reported;
``unknown`` (captcha, WAF, outage) is retried with the capture backoff and, when retries run out, nothing is
reported: the scheduler asks again after its spacing. The browser adds nothing a check needs: every capture
proves the session again on the chart page itself (capture.py), where a private layout's access also shows."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import dramatiq
import grpc
from dramatiq.broker import Broker
from dramatiq.middleware import CurrentMessage
from prometheus_client import Counter

from apidevs.alerts.v1 import signal_service_pb2
from capture_service.errors import (
    CaptureError,
    SessionCheckInconclusiveError,
    SessionMissingError,
    SessionUndecryptableError,
    SignalServiceUnavailableError,
)
from capture_service.session_probe import probe_session
from capture_service.worker import CaptureWorker
from mesh.errors import FailedPreconditionError, NotFoundError, from_rpc_error
from mesh.logging import request_id_var
from mesh.queues import SESSION_CHECK_ACTOR, SESSION_CHECK_QUEUE

log = logging.getLogger(__name__)

SESSION_CHECK_PRIORITY = 100
_RPC_TIMEOUT_SECONDS = 10.0

SESSION_CHECKS = Counter(
    "alerts_session_checks_total",
    "TradingView session check attempts by outcome: valid, invalid, skipped, unreadable, attempt_failed"
    " (unknown verdicts and unreachable services)",
    ["outcome"],
)


class SessionChecker:
    """Runs session checks with a started :class:`CaptureWorker`'s browser pool, cipher and channels."""

    def __init__(self, worker: CaptureWorker) -> None:
        self._worker = worker

    async def check(self, user_id: str, check_id: str) -> None:
        """One attempt of job `check_id`; raises a retryable CaptureError when it should be tried again."""
        claim = await self._claim(user_id, check_id)
        if claim is None or not claim.proceed:
            SESSION_CHECKS.labels("skipped").inc()
            return
        try:
            session = self._worker.decrypt_session(claim.tradingview_session_ciphertext)
        except (SessionUndecryptableError, SessionMissingError) as exc:
            SESSION_CHECKS.labels("unreadable").inc()
            log.error("session check impossible", extra={"user_id": user_id, "reason": exc.reason})
            return
        probe = await probe_session(self._worker.http, self._worker.settings.tradingview_url, session)
        if probe.verdict == "unknown":
            raise SessionCheckInconclusiveError(probe.detail)
        valid = probe.verdict == "valid"
        reason = "" if valid else probe.detail
        await self._report(
            signal_service_pb2.ReportSessionCheckRequest(
                user_id=user_id,
                session_version=claim.session_version,
                valid=valid,
                reason=reason,
                worker_id=self._worker.worker_id,
            )
        )
        SESSION_CHECKS.labels("valid" if valid else "invalid").inc()
        log.info("session checked", extra={"user_id": user_id, "valid": valid})

    async def _claim(
        self, user_id: str, check_id: str
    ) -> signal_service_pb2.ClaimSessionCheckResponse | None:
        request = signal_service_pb2.ClaimSessionCheckRequest(
            user_id=user_id, worker_id=self._worker.worker_id, check_id=check_id
        )
        try:
            return await self._worker.signals.ClaimSessionCheck(request, timeout=_RPC_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            error = from_rpc_error(exc)
            if isinstance(error, NotFoundError):
                log.info("session check for an unknown user dropped", extra={"user_id": user_id})
                return None
            raise SignalServiceUnavailableError(
                f"ClaimSessionCheck failed: {error.code.name} {error}"
            ) from exc

    async def _report(self, request: signal_service_pb2.ReportSessionCheckRequest) -> None:
        try:
            await self._worker.signals.ReportSessionCheck(request, timeout=_RPC_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            error = from_rpc_error(exc)
            # The user set new cookies while this check ran, or is gone: the result is about nothing stored.
            if isinstance(error, FailedPreconditionError | NotFoundError):
                log.info(
                    "session check result not applied",
                    extra={"user_id": request.user_id, "reason": error.reason},
                )
                return
            raise SignalServiceUnavailableError(
                f"ReportSessionCheck failed: {error.code.name} {error}"
            ) from exc


def declare_session_check_actor(broker: Broker, worker: CaptureWorker) -> dramatiq.Actor[..., Any]:
    """Declares the session check actor on `broker`, running on `worker`'s browser and channels."""
    checker = SessionChecker(worker)

    async def check_tradingview_session(user_id: str) -> None:
        message = CurrentMessage.get_current_message()
        options = message.options if message is not None else {}
        request_id_var.set(str(options.get("request_id") or uuid.uuid4().hex))
        # Retries of one message keep its id, so a retried check may claim again.
        check_id = message.message_id if message is not None else uuid.uuid4().hex
        try:
            await checker.check(user_id, check_id)
        except CaptureError as exc:
            SESSION_CHECKS.labels("attempt_failed").inc()
            log.warning(
                "session check attempt failed",
                extra={"user_id": user_id, "reason": exc.reason, "error": str(exc)},
            )
            raise dramatiq.Retry(str(exc)) from exc

    return dramatiq.Actor(
        check_tradingview_session,
        broker=broker,
        actor_name=SESSION_CHECK_ACTOR,
        queue_name=SESSION_CHECK_QUEUE,
        priority=SESSION_CHECK_PRIORITY,
        options={},
    )
