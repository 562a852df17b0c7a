"""The capture job and its Dramatiq actors.

Queues and priority
-------------------
There is one queue per plan, ``capture.<plan>``, and one actor per queue, ``capture_screenshot_<plan>``,
all running the same job. signal_service must send exactly these (queue_name, actor_name) pairs, with
``args=(signal_id,)``, ``kwargs={}`` and optionally ``options={"request_id": ...}``:

    ("capture.premium", "capture_screenshot_premium")
    ("capture.pro",     "capture_screenshot_pro")
    ("capture.basic",   "capture_screenshot_basic")
    ("capture.free",    "capture_screenshot_free")

Why one actor per plan: a Dramatiq worker runs one consumer thread per queue, each prefetching a few
messages into a single in-process priority queue from which the worker threads take jobs; that queue is
ordered by the *actor's* ``priority`` (lower first) and then by arrival. A message's actor is looked up by
its ``actor_name`` alone, so the priority has to travel in the actor name. Premium is 0, pro 10, basic
20, free 30: under backlog every worker thread that frees up takes a prefetched premium job before any
other, so a premium job waits for at most one running job per thread, however many free jobs are queued
ahead of it. Without backlog the order does not matter. A message for an unknown actor name is
dead-lettered by Dramatiq and logged as an error, so a mismatch shows up at once.

TradingView session checks (capture_service/session_check.py) run on the same workers from the queue
``capture.session_check`` with priority 100, after every capture.

The job
-------
Actors take the signal id only; everything else comes from ``SignalService.ClaimCapture``, which also
tells a redelivered or duplicated job to stop when the capture is already finished (delivery is at least
once). The screenshot is uploaded under the key the claim names (the signal service derives it from the
signal's owner and id and accepts no other in the report), so a repeated job overwrites the same object
and reports the same key. A logged-out TradingView page, a missing or unreadable session are
reported FAILED at once and not retried; any other failure is retried with backoff (see broker.py) and,
after the last retry, reported FAILED with its reason by :class:`CaptureWorkerMiddleware`.
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

import dramatiq
import grpc
import httpx
import redis.asyncio as redis_async
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.broker import Broker, MessageProxy
from dramatiq.middleware import AsyncIO, CurrentMessage, TimeLimitExceeded
from prometheus_client import Counter, Gauge, Histogram

from apidevs.alerts.v1 import (
    resources_pb2,
    signal_service_pb2,
    signal_service_pb2_grpc,
    storage_service_pb2,
    storage_service_pb2_grpc,
)
from capture_service.browser import BrowserPool
from capture_service.capture import TradingViewSession, capture_chart, chart_url
from capture_service.errors import (
    CaptureError,
    SessionMissingError,
    SessionUndecryptableError,
    SignalServiceUnavailableError,
    StorageUnavailableError,
)
from capture_service.settings import CaptureSettings
from mesh.crypto import CookieCipher, CookieCipherError
from mesh.errors import FailedPreconditionError, NotFoundError, from_rpc_error
from mesh.grpc import GrpcTls, open_channel
from mesh.queues import PLANS_BY_PRIORITY, capture_actor, capture_queue, capture_workers_key

log = logging.getLogger(__name__)

UPLOAD_CHUNK_BYTES = 1024 * 1024
_RPC_TIMEOUT_SECONDS = 10.0
_UPLOAD_TIMEOUT_SECONDS = 20.0
_HEARTBEAT_SECONDS = 5.0

CAPTURES = Counter(
    "alerts_captures_total",
    "Capture attempts by outcome: success, failed (for good), retried (the attempt failed; retried unless "
    "it was the last), skipped (nothing to do); reason says why one did not succeed",
    ["outcome", "reason"],
)
CAPTURE_DURATION = Histogram(
    "alerts_capture_duration_seconds",
    "Time from claim to upload of successful captures",
    buckets=(0.5, 1, 2, 3, 5, 8, 13, 20, 30),
)
JOBS_IN_PROGRESS = Gauge("alerts_jobs_in_progress", "Capture jobs this worker process is running")


def capture_priority(plan: str) -> int:
    return PLANS_BY_PRIORITY.index(plan) * 10


CAPTURE_ACTOR_NAMES = frozenset(capture_actor(plan) for plan in PLANS_BY_PRIORITY)


def failure_reason(exception: BaseException) -> str:
    """The machine-readable reason for a failed attempt, looking through Retry and wrapper exceptions."""
    current: BaseException | None = exception
    while current is not None:
        if isinstance(current, CaptureError):
            return current.reason
        if isinstance(current, TimeLimitExceeded):
            return "timeout"
        current = current.__cause__
    return "worker_error"


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
        self._signals: signal_service_pb2_grpc.SignalServiceStub | None = None
        self._storage: storage_service_pb2_grpc.StorageServiceStub | None = None
        self._redis: redis_async.Redis | None = None
        self._heartbeat: asyncio.Task[None] | None = None
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
        self._heartbeat = asyncio.create_task(self._beat())
        log.info("capture worker started", extra={"worker_id": self.worker_id})

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
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
        key = capture_workers_key(self.settings)
        while True:
            try:
                await self._redis.zadd(key, {self.worker_id: int(time.time() * 1000)})
            except redis_async.RedisError as exc:
                log.warning("worker heartbeat failed", extra={"error": str(exc)})
            await asyncio.sleep(_HEARTBEAT_SECONDS)

    async def run(self, signal_id: str, *, attempt: int) -> None:
        """One attempt at one capture; raises a retryable CaptureError when it should be tried again."""
        claim = await self._claim(signal_id, attempt)
        if claim is None or not claim.proceed:
            CAPTURES.labels("skipped", "").inc()
            log.info("capture skipped", extra={"signal_id": signal_id, "attempt": attempt})
            return
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
                )
            )
            CAPTURES.labels("failed", exc.reason).inc()
            return
        key = claim.object_key
        await self._upload(key, shot.png)
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

    async def report_failure(self, signal_id: str, *, reason: str, attempt: int) -> None:
        """Records a capture that ran out of retries."""
        CAPTURES.labels("failed", reason).inc()
        await self._report(
            signal_service_pb2.ReportCaptureRequest(
                signal_id=signal_id,
                status=resources_pb2.SCREENSHOT_STATUS_FAILED,
                error=reason,
                attempt=attempt,
            )
        )

    @property
    def signals(self) -> signal_service_pb2_grpc.SignalServiceStub:
        """The SignalService stub, once started."""
        assert self._signals is not None, "CaptureWorker.start() has not run"
        return self._signals

    @property
    def http(self) -> httpx.AsyncClient:
        """The HTTP client for TradingView's pages outside the browser (session checks)."""
        if self._http is None:
            raise RuntimeError("CaptureWorker.start() has not run")
        return self._http

    async def _claim(self, signal_id: str, attempt: int) -> signal_service_pb2.ClaimCaptureResponse | None:
        assert self._signals is not None
        request = signal_service_pb2.ClaimCaptureRequest(
            signal_id=signal_id, attempt=attempt, worker_id=self.worker_id
        )
        try:
            return await self._signals.ClaimCapture(request, timeout=_RPC_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            error = from_rpc_error(exc)
            if isinstance(error, NotFoundError):
                log.warning("capture for an unknown signal dropped", extra={"signal_id": signal_id})
                return None
            raise SignalServiceUnavailableError(f"ClaimCapture failed: {error.code.name} {error}") from exc

    async def _report(self, request: signal_service_pb2.ReportCaptureRequest) -> None:
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
            raise SignalServiceUnavailableError(f"ReportCapture failed: {error.code.name} {error}") from exc

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
            raise StorageUnavailableError(f"PutObject failed: {error.code.name} {error}") from exc


class CaptureWorkerMiddleware(AsyncIO):
    """Dramatiq's AsyncIO event loop, plus the worker's browser and channels living on it.

    Booting before the worker threads start means no job can arrive before Chromium is up; closing
    after they stopped means no job loses its browser mid-capture. Its ``after_process_message`` runs
    after Retries' (see create_broker), so it sees when a message has run out of retries and reports
    that capture FAILED.
    """

    def __init__(self, worker: CaptureWorker) -> None:
        super().__init__()
        self.worker = worker

    def before_worker_boot(self, broker: Broker, worker: dramatiq.Worker) -> None:
        super().before_worker_boot(broker, worker)
        _event_loop().run_coroutine(self.worker.start())

    def after_worker_shutdown(self, broker: Broker, worker: dramatiq.Worker) -> None:
        _event_loop().run_coroutine(self.worker.close())
        super().after_worker_shutdown(broker, worker)

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        if exception is None or not message.failed or message.actor_name not in CAPTURE_ACTOR_NAMES:
            return
        signal_id = str(message.args[0])
        reason = failure_reason(exception)
        # Retries has already counted this attempt.
        attempt = max(0, int(message.options.get("retries", 1)) - 1)
        log.error("capture failed after its last retry", extra={"signal_id": signal_id, "reason": reason})
        try:
            _event_loop().run_coroutine(self.worker.report_failure(signal_id, reason=reason, attempt=attempt))
        except CaptureError as exc:
            # The message is dead-lettered either way; signal_service's sweeper re-queues stale captures.
            log.error("could not report a failed capture", extra={"signal_id": signal_id, "error": str(exc)})


def _event_loop() -> Any:
    loop_thread = get_event_loop_thread()
    if loop_thread is None:
        raise RuntimeError("the AsyncIO event loop thread is not running")
    return loop_thread


def declare_capture_actors(broker: Broker, worker: CaptureWorker) -> list[dramatiq.Actor[..., Any]]:
    """Declares one actor per plan queue on `broker`, all running `worker`'s job."""

    async def capture_screenshot(signal_id: str) -> None:
        message = CurrentMessage.get_current_message()
        options = message.options if message is not None else {}
        attempt = int(options.get("retries", 0))
        try:
            with JOBS_IN_PROGRESS.track_inprogress():
                await worker.run(signal_id, attempt=attempt)
        except CaptureError as exc:
            CAPTURES.labels("retried", exc.reason).inc()
            log.warning(
                "capture finished",
                extra={
                    "signal_id": signal_id,
                    "outcome": "retried",
                    "attempt": attempt,
                    "reason": exc.reason,
                    "error": str(exc),
                },
            )
            # Retry skips Dramatiq's traceback logging for these expected failures; the backoff is the same.
            raise dramatiq.Retry(str(exc)) from exc

    return [
        dramatiq.Actor(
            capture_screenshot,
            broker=broker,
            actor_name=capture_actor(plan),
            queue_name=capture_queue(plan),
            priority=capture_priority(plan),
            options={},
        )
        for plan in PLANS_BY_PRIORITY
    ]
