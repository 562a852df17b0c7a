"""The capture job's Dramatiq actors and the middleware that runs them (the job itself: worker.py).

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

Dependency waits and held outcomes (worker.py) become delayed copies of the job's message here, the
state they need travelling in its options.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

import dramatiq
from dramatiq.broker import Broker, MessageProxy
from dramatiq.message import Message
from dramatiq.middleware import CurrentMessage, TimeLimitExceeded
from prometheus_client import Gauge

from apidevs.alerts.v1 import signal_service_pb2
from capture_service.errors import CaptureError
from capture_service.settings import CaptureSettings
from capture_service.worker import (
    CAPTURES,
    CLAIM_OPTION,
    RESUMES_CLAIM_OPTION,
    CaptureWorker,
    DependencyWait,
    OutcomeHeld,
)
from mesh.loops import backoff_delay
from mesh.queues import PLANS_BY_PRIORITY, capture_actor, capture_queue
from mesh.workers import AfterMessage, WorkerLifecycle, event_loop

log = logging.getLogger(__name__)

# Message options carrying a job's state across re-enqueues (see worker.py for the claim's).
WAITING_SINCE_OPTION = "infrastructure_waiting_since_ms"
WAITS_OPTION = "infrastructure_waits"
HELD_REPORT_OPTION = "held_report"

JOBS_IN_PROGRESS = Gauge("alerts_jobs_in_progress", "Capture jobs this worker process is running")


def capture_priority(plan: str) -> int:
    return PLANS_BY_PRIORITY.index(plan) * 10


CAPTURE_ACTOR_NAMES = frozenset(capture_actor(plan) for plan in PLANS_BY_PRIORITY)


def encode_report(request: signal_service_pb2.ReportCaptureRequest) -> str:
    """A report as a message option (options are JSON)."""
    return base64.b64encode(request.SerializeToString()).decode()


def decode_report(option: str) -> signal_service_pb2.ReportCaptureRequest:
    return signal_service_pb2.ReportCaptureRequest.FromString(base64.b64decode(option))


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


class CaptureWorkerMiddleware(WorkerLifecycle, AfterMessage):
    """Dramatiq's AsyncIO event loop, plus the worker's browser and channels living on it (booted before
    the worker threads start, closed after they stopped: mesh.workers.WorkerLifecycle).

    Its ``after_process_message`` runs after Retries' (see create_broker), so it sees when a message has
    run out of retries and reports that capture FAILED.
    """

    def __init__(self, worker: CaptureWorker) -> None:
        super().__init__(worker)
        self.worker = worker

    def after_message(self, broker: Broker, message: MessageProxy, exception: BaseException | None) -> None:
        if exception is None or not message.failed or message.actor_name not in CAPTURE_ACTOR_NAMES:
            return
        if HELD_REPORT_OPTION in message.options:
            # Only re-enqueueing a held report can fail this way (Redis away): the message stays
            # unacknowledged and is redelivered, report included; it must not be replaced by a failure.
            return
        signal_id = str(message.args[0])
        reason = failure_reason(exception)
        # Retries has already counted this attempt.
        attempt = max(0, int(message.options.get("retries", 1)) - 1)
        claim = int(message.options.get(CLAIM_OPTION, 0))
        log.error("capture failed after its last retry", extra={"signal_id": signal_id, "reason": reason})
        try:
            event_loop().run_coroutine(
                self.worker.report_failure(signal_id, reason=reason, attempt=attempt, claim=claim)
            )
        except OutcomeHeld as held:
            hold_report(broker, message, held, settings=self.worker.settings)


def infrastructure_backoff_ms(settings: CaptureSettings, waits: int) -> int:
    """The delay before a job's next try after `waits` earlier ones found a dependency unavailable
    (mesh.loops.backoff_delay: doubling from the minimum to the maximum, with jitter)."""
    delay = backoff_delay(
        waits + 1,
        base_seconds=settings.capture_infrastructure_min_backoff_ms / 1000,
        max_seconds=settings.capture_infrastructure_max_backoff_ms / 1000,
    )
    return int(delay * 1000)


def _requeue(
    broker: Broker, message: Message[Any] | MessageProxy, options: dict[str, Any], settings: CaptureSettings
) -> int:
    """Puts a copy of `message` back on its queue, delayed, with `options` added; returns the delay."""
    waits = int(message.options.get(WAITS_OPTION, 0))
    delay_ms = infrastructure_backoff_ms(settings, waits)
    broker.enqueue(message.copy(options={**options, WAITS_OPTION: waits + 1}), delay=delay_ms)
    return delay_ms


def hold_report(
    broker: Broker, message: Message[Any] | MessageProxy, held: OutcomeHeld, *, settings: CaptureSettings
) -> None:
    """Puts an outcome the signal service has not recorded yet on the queue, to send again later."""
    delay_ms = _requeue(broker, message, {HELD_REPORT_OPTION: encode_report(held.request)}, settings)
    CAPTURES.labels("held", "").inc()
    log.warning(
        "capture report held",
        extra={"signal_id": held.request.signal_id, "error": str(held), "retry_in_ms": delay_ms},
    )


def declare_capture_actors(broker: Broker, worker: CaptureWorker) -> list[dramatiq.Actor[..., Any]]:
    """Declares one actor per plan queue on `broker`, all running `worker`'s job."""

    async def capture_screenshot(signal_id: str) -> None:
        message = CurrentMessage.get_current_message()
        assert message is not None, "capture actors run under Dramatiq's CurrentMessage middleware"
        options = message.options
        attempt = int(options.get("retries", 0))
        try:
            with JOBS_IN_PROGRESS.track_inprogress():
                if HELD_REPORT_OPTION in options:
                    await worker.deliver_held_report(decode_report(options[HELD_REPORT_OPTION]))
                else:
                    waiting_since = options.get(WAITING_SINCE_OPTION)
                    await worker.run(
                        signal_id,
                        attempt=attempt,
                        waiting_since_ms=int(waiting_since) if waiting_since is not None else None,
                        job_options=options,
                    )
        except DependencyWait as wait:
            waited = {WAITING_SINCE_OPTION: wait.waiting_since_ms}
            if wait.claim:
                waited[RESUMES_CLAIM_OPTION] = wait.claim
            delay_ms = _requeue(broker, message, waited, worker.settings)
            CAPTURES.labels("waiting", wait.reason).inc()
            log.warning(
                "capture waiting for a dependency",
                extra={
                    "signal_id": signal_id,
                    "reason": wait.reason,
                    "error": str(wait),
                    "retry_in_ms": delay_ms,
                },
            )
        except OutcomeHeld as held:
            hold_report(broker, message, held, settings=worker.settings)
        except CaptureError as exc:
            # A failure of the attempt itself: a later infrastructure wait starts its own clock.
            options.pop(WAITING_SINCE_OPTION, None)
            options.pop(WAITS_OPTION, None)
            options.pop(RESUMES_CLAIM_OPTION, None)
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
