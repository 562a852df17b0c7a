"""The capture job: one attempt at one chart, from claim to upload to report (Dramatiq side: tasks.py).

The job
-------
Actors take the signal id only; everything else comes from ``SignalService.ClaimCapture``, which also
tells a redelivered or duplicated job to stop when the capture is already finished (delivery is at least
once). The screenshot is uploaded under the key the claim names (the signal service derives it from the
signal's owner and id and accepts no other in the report), so a repeated job overwrites the same object
and reports the same key. A logged-out TradingView page, a missing or unreadable session are
reported FAILED at once and not retried; any other failure is retried with backoff (see broker.py) and,
after the last retry, reported FAILED with its reason by :class:`CaptureWorkerMiddleware`.

Infrastructure faults
---------------------
An attempt that could not reach the signal service (or, through it, the database) or the storage
service is not the chart's failure and does not use up a retry: the job goes back on its queue with a
delay of its own, doubling (with jitter) from ``capture_infrastructure_min_backoff_ms`` to
``..._max_backoff_ms``, and the time it started waiting travels in the message. Past
``capture_infrastructure_deadline_seconds`` it is reported FAILED with reason ``infrastructure_unavailable``.

Claims and attempts
-------------------
Every ClaimCapture that proceeds gets a number (``ClaimCaptureResponse.claim``); the job's reports name
it, so the signal service refuses a report from a claim superseded since (a redelivery, a sweep) and
takes a repeated one once. ``screenshots.attempts`` and Dramatiq's retry count agree: both count attempts
at the chart. A delivery re-queued because a dependency was unavailable after its claim (the upload
could not reach storage) resumes that claim (``ClaimCaptureRequest.resumes_claim``) and is not a new
attempt; one re-queued before any claim had none to resume.

An outcome the worker holds (a capture uploaded, a failure decided) is reported until the signal service
records it: a few seconds of retries in process, then the report itself is put on the job's queue as a
message of its own (delayed, backing off the same way) and sent again from there, by whichever worker
takes it. It lives in Redis from then on, so neither a restart nor a graceful shutdown drops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import redis.asyncio as redis_async
from prometheus_client import Counter, Histogram

from apidevs.alerts.v1 import (
    resources_pb2,
    signal_service_pb2,
    signal_service_pb2_grpc,
    storage_service_pb2,
    storage_service_pb2_grpc,
)
from capture_service import liveness
from capture_service.browser import BrowserPool
from capture_service.capture import TradingViewSession, capture_chart, chart_url
from capture_service.errors import (
    CaptureError,
    DependencyUnavailableError,
    InfrastructureUnavailableError,
    SessionMissingError,
    SessionUndecryptableError,
    SignalServiceRefusedError,
    SignalServiceUnavailableError,
    StorageRefusedError,
    StorageUnavailableError,
)
from capture_service.settings import CaptureSettings
from mesh.crypto import CookieCipher, CookieCipherError
from mesh.errors import (
    AlertsError,
    FailedPreconditionError,
    Failure,
    NotFoundError,
    classify_failure,
    from_rpc_error,
)
from mesh.grpc import GrpcTls, open_channel
from mesh.loops import BackgroundLoop, backoff_delay
from mesh.queues import capture_workers_key

log = logging.getLogger(__name__)

UPLOAD_CHUNK_BYTES = 1024 * 1024
_RPC_TIMEOUT_SECONDS = 10.0
_UPLOAD_TIMEOUT_SECONDS = 20.0
_HEARTBEAT_SECONDS = 5.0
# How long an outcome is reported in process before it is handed to Redis as a message of its own: short,
# as the attempt's time limit still runs.
_REPORT_IN_PROCESS_SECONDS = 4.0
_REPORT_FIRST_RETRY_SECONDS = 0.25
# Message options a delivery's run reads and writes (the actor carries them across re-enqueues):
# the job's latest claim, for the reports sent on its behalf (the last retry's failure),
CLAIM_OPTION = "capture_claim"
# and the claim a delivery re-queued by a dependency wait resumes.
RESUMES_CLAIM_OPTION = "resumes_claim"

CAPTURES = Counter(
    "alerts_captures_total",
    "Capture attempts by outcome: success, failed (for good), retried (the attempt failed; retried unless "
    "it was the last), waiting (a dependency was unavailable; tried again without using up a retry), "
    "held (its outcome could not be reported yet; sent again from the queue), skipped (nothing to do); "
    "reason says why one did not succeed",
    ["outcome", "reason"],
)
CAPTURE_DURATION = Histogram(
    "alerts_capture_duration_seconds",
    "Time from claim to upload of successful captures",
    buckets=(0.5, 1, 2, 3, 5, 8, 13, 20, 30),
)


class DependencyWait(Exception):
    """The attempt could not reach a dependency: the actor puts the job back on its queue, delayed."""

    def __init__(self, cause: DependencyUnavailableError, *, waiting_since_ms: int, claim: int = 0) -> None:
        super().__init__(str(cause))
        self.reason = cause.reason
        self.waiting_since_ms = waiting_since_ms
        # The claim the wait interrupted, 0 when it came before any claim.
        self.claim = claim


class OutcomeHeld(Exception):
    """An outcome the signal service has not recorded yet: the actor puts it on the queue to send again."""

    def __init__(self, request: signal_service_pb2.ReportCaptureRequest, cause: CaptureError) -> None:
        super().__init__(str(cause))
        self.request = request


class CaptureWorker:
    """What one worker process holds for its jobs: the browser pool and the service channels.

    Lives on Dramatiq's event loop thread: start, close and every job run there.
    """

    def __init__(self, settings: CaptureSettings) -> None:
        self.settings = settings
        self.worker_id = settings.capture_worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.pool = BrowserPool(
            executable_path=settings.chromium_path,
            viewport=(settings.capture_viewport_width, settings.capture_viewport_height),
        )
        self._cipher = CookieCipher.from_settings(settings)
        self._channels: list[grpc.aio.Channel] = []
        self._signals: signal_service_pb2_grpc.SignalServiceAsyncStub | None = None
        self._storage: storage_service_pb2_grpc.StorageServiceAsyncStub | None = None
        self._redis: redis_async.Redis | None = None
        # A failed beat is retried sooner than the next one, at most one interval later.
        self._heartbeat = BackgroundLoop(
            "capture-worker-heartbeat",
            self._beat,
            interval_seconds=_HEARTBEAT_SECONDS,
            min_backoff_seconds=_HEARTBEAT_SECONDS / 4,
            max_backoff_seconds=_HEARTBEAT_SECONDS,
            expected_errors=(redis_async.RedisError,),
        )
        self._http: httpx.AsyncClient | None = None

    async def start(self) -> None:
        api_key = self.settings.service_api_key.get_secret_value() if self.settings.service_api_key else None
        tls = GrpcTls.from_settings(self.settings)
        signal_channel = open_channel(self.settings.signal_addr, api_key, tls=tls)
        storage_channel = open_channel(self.settings.storage_addr, api_key, tls=tls)
        self._channels = [signal_channel, storage_channel]
        self._signals = signal_service_pb2_grpc.SignalServiceStub(signal_channel)
        self._storage = storage_service_pb2_grpc.StorageServiceStub(storage_channel)
        await self.pool.start()
        self._http = httpx.AsyncClient(timeout=self.settings.session_check_timeout_seconds)
        self._redis = redis_async.Redis.from_url(self.settings.redis_url)
        self._heartbeat.start()
        log.info("capture worker started", extra={"worker_id": self.worker_id})

    async def close(self) -> None:
        await self._heartbeat.stop()
        if self._redis is not None:
            with contextlib.suppress(redis_async.RedisError):
                await self._redis.zrem(capture_workers_key(self.settings), self.worker_id)
            await self._redis.aclose()
        await self.pool.close()
        if self._http is not None:
            await self._http.aclose()
        for channel in self._channels:
            await channel.close()
        log.info("capture worker stopped", extra={"worker_id": self.worker_id})

    async def _beat(self) -> None:
        assert self._redis is not None
        # The actors' event loop is alive while this runs: the liveness probe reads it.
        liveness.beat()
        await self._redis.zadd(capture_workers_key(self.settings), {self.worker_id: int(time.time() * 1000)})

    async def run(
        self,
        signal_id: str,
        *,
        attempt: int,
        waiting_since_ms: int | None = None,
        job_options: dict[str, Any] | None = None,
    ) -> None:
        """One attempt at one capture; raises a retryable CaptureError when it should be tried again,
        DependencyWait when a dependency was unavailable, OutcomeHeld when its outcome is not recorded yet.
        `waiting_since_ms` is when this job first found a dependency unavailable, if it did; `job_options`,
        the message's options, carry the claim this delivery resumes and receive the one it makes."""
        options: dict[str, Any] = job_options if job_options is not None else {}
        resumes_claim = int(options.get(RESUMES_CLAIM_OPTION, 0))
        try:
            claim = await self._claim(signal_id, attempt, resumes_claim)
        except DependencyUnavailableError as exc:
            await self._wait_or_give_up(
                signal_id, exc, attempt=attempt, waiting_since_ms=waiting_since_ms, claim=resumes_claim
            )
            return
        if claim is None or not claim.proceed:
            CAPTURES.labels("skipped", "").inc()
            log.info("capture skipped", extra={"signal_id": signal_id, "attempt": attempt})
            return
        options[CLAIM_OPTION] = claim.claim
        started = time.monotonic()
        signal = claim.signal
        log.info("capture started", extra={"signal_id": signal_id, "attempt": attempt})
        try:
            session = self.decrypt_session(claim.tradingview_session_ciphertext)
            url = chart_url(self.settings.tradingview_url, claim.chart_id, signal.ticker, signal.interval)
            shot = await capture_chart(
                self.pool, url, session, timeout_seconds=self.settings.capture_timeout_seconds
            )
        except CaptureError as exc:
            if exc.retryable:
                raise
            log.warning(
                "capture finished",
                extra={
                    "signal_id": signal_id,
                    "outcome": "failed",
                    "reason": exc.reason,
                    "error": str(exc),
                    "ms": int((time.monotonic() - started) * 1000),
                },
            )
            await self._report(
                signal_service_pb2.ReportCaptureRequest(
                    signal_id=signal_id,
                    status=resources_pb2.SCREENSHOT_STATUS_FAILED,
                    error=exc.reason,
                    attempt=attempt,
                    claim=claim.claim,
                )
            )
            CAPTURES.labels("failed", exc.reason).inc()
            return
        key = claim.object_key
        try:
            await self._upload(key, shot.png)
        except DependencyUnavailableError as exc:
            # The claim went through, so this is a new wait, not the one the job may have had before it.
            await self._wait_or_give_up(
                signal_id, exc, attempt=attempt, waiting_since_ms=None, claim=claim.claim
            )
            return
        duration = time.monotonic() - started
        await self._report(
            signal_service_pb2.ReportCaptureRequest(
                signal_id=signal_id,
                status=resources_pb2.SCREENSHOT_STATUS_COMPLETED,
                object_key=key,
                size_bytes=len(shot.png),
                width=shot.width,
                height=shot.height,
                duration_ms=int(duration * 1000),
                attempt=attempt,
                claim=claim.claim,
            )
        )
        CAPTURES.labels("success", "").inc()
        CAPTURE_DURATION.observe(duration)
        log.info(
            "capture finished",
            extra={
                "signal_id": signal_id,
                "outcome": "success",
                "object_key": key,
                "bytes": len(shot.png),
                "ms": int(duration * 1000),
            },
        )

    async def _wait_or_give_up(
        self,
        signal_id: str,
        cause: DependencyUnavailableError,
        *,
        attempt: int,
        waiting_since_ms: int | None,
        claim: int,
    ) -> None:
        """Raises DependencyWait while the job is within its infrastructure deadline; past it, reports the
        capture FAILED with reason infrastructure_unavailable. `claim` is the claim the wait interrupts."""
        now_ms = int(time.time() * 1000)
        since_ms = waiting_since_ms or now_ms
        if now_ms - since_ms < self.settings.capture_infrastructure_deadline_seconds * 1000:
            raise DependencyWait(cause, waiting_since_ms=since_ms, claim=claim) from cause
        reason = InfrastructureUnavailableError.reason
        log.error(
            "capture failed",
            extra={
                "signal_id": signal_id,
                "reason": reason,
                "error": str(cause),
                "waited_seconds": round((now_ms - since_ms) / 1000),
            },
        )
        await self.report_failure(signal_id, reason=reason, attempt=attempt, claim=claim)

    async def report_failure(self, signal_id: str, *, reason: str, attempt: int, claim: int = 0) -> None:
        """Records a capture that failed for good (ran out of retries, or of time to wait); `claim` is the
        job's latest claim, 0 when it made none."""
        CAPTURES.labels("failed", reason).inc()
        await self._report(
            signal_service_pb2.ReportCaptureRequest(
                signal_id=signal_id,
                status=resources_pb2.SCREENSHOT_STATUS_FAILED,
                error=reason,
                attempt=attempt,
                claim=claim,
            )
        )

    @property
    def signals(self) -> signal_service_pb2_grpc.SignalServiceAsyncStub:
        """The SignalService stub, once started."""
        assert self._signals is not None, "CaptureWorker.start() has not run"
        return self._signals

    @property
    def http(self) -> httpx.AsyncClient:
        """The HTTP client for TradingView's pages outside the browser (session checks)."""
        if self._http is None:
            raise RuntimeError("CaptureWorker.start() has not run")
        return self._http

    async def _claim(
        self, signal_id: str, attempt: int, resumes_claim: int
    ) -> signal_service_pb2.ClaimCaptureResponse | None:
        assert self._signals is not None
        request = signal_service_pb2.ClaimCaptureRequest(
            signal_id=signal_id, attempt=attempt, worker_id=self.worker_id, resumes_claim=resumes_claim
        )
        try:
            return await self._signals.ClaimCapture(request, timeout=_RPC_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            error = from_rpc_error(exc)
            if isinstance(error, NotFoundError):
                log.warning("capture for an unknown signal dropped", extra={"signal_id": signal_id})
                return None
            raise _signal_service_error("ClaimCapture", error) from exc

    async def _report(self, request: signal_service_pb2.ReportCaptureRequest) -> None:
        """Records an outcome, trying again for a few seconds; raises OutcomeHeld if it is not recorded by
        then, for the actor to send it again from the queue."""
        deadline = time.monotonic() + _REPORT_IN_PROCESS_SECONDS
        failures = 0
        while True:
            try:
                await self._send_report(request)
                return
            except CaptureError as exc:
                failures += 1
                delay = backoff_delay(
                    failures, base_seconds=_REPORT_FIRST_RETRY_SECONDS, max_seconds=_REPORT_IN_PROCESS_SECONDS
                )
                if time.monotonic() + delay > deadline:
                    raise OutcomeHeld(request, exc) from exc
                await asyncio.sleep(delay)

    async def deliver_held_report(self, request: signal_service_pb2.ReportCaptureRequest) -> None:
        """Sends an outcome an earlier attempt could not; raises OutcomeHeld while it still cannot."""
        await self._report(request)
        log.info("held capture report recorded", extra={"signal_id": request.signal_id})

    async def _send_report(self, request: signal_service_pb2.ReportCaptureRequest) -> None:
        assert self._signals is not None
        try:
            await self._signals.ReportCapture(request, timeout=_RPC_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            error = from_rpc_error(exc)
            # A duplicate delivery finishing after the first one: the capture is already recorded.
            if isinstance(error, FailedPreconditionError | NotFoundError):
                log.info(
                    "capture report not applied",
                    extra={"signal_id": request.signal_id, "reason": error.reason, "error": str(error)},
                )
                return
            raise _signal_service_error("ReportCapture", error) from exc

    def decrypt_session(self, ciphertext: bytes) -> TradingViewSession:
        if not ciphertext:
            raise SessionMissingError("the user has no TradingView session configured")
        try:
            return TradingViewSession.from_json(self._cipher.decrypt(ciphertext))
        except (CookieCipherError, ValueError) as exc:
            raise SessionUndecryptableError(f"stored TradingView session is unreadable: {exc}") from exc

    async def _upload(self, key: str, png: bytes) -> None:
        assert self._storage is not None

        async def parts() -> AsyncIterator[storage_service_pb2.PutObjectRequest]:
            yield storage_service_pb2.PutObjectRequest(
                header=storage_service_pb2.PutObjectHeader(key=key, content_type="image/png")
            )
            for offset in range(0, len(png), UPLOAD_CHUNK_BYTES):
                yield storage_service_pb2.PutObjectRequest(chunk=png[offset : offset + UPLOAD_CHUNK_BYTES])

        try:
            await self._storage.PutObject(parts(), timeout=_UPLOAD_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            error = from_rpc_error(exc)
            message = f"PutObject failed: {error.code.name} {error}"
            if classify_failure(error) is Failure.PEER_AWAY:
                raise StorageUnavailableError(message) from exc
            raise StorageRefusedError(message) from exc


def _signal_service_error(method: str, error: AlertsError) -> CaptureError:
    message = f"{method} failed: {error.code.name} {error}"
    if classify_failure(error) is Failure.PEER_AWAY:
        return SignalServiceUnavailableError(message)
    return SignalServiceRefusedError(message)
