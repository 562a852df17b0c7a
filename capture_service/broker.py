"""The Dramatiq broker capture workers consume from.

Delivery is at least once. A job is acknowledged only after it ran; when a worker dies mid-job (SIGKILL,
OOM, node loss) its unacknowledged jobs stay in Redis under its id until some broker call runs Dramatiq's
maintenance on that queue and finds the worker's heartbeat older than ``heartbeat_timeout``; they are
then pushed back on their queue. Dramatiq runs that sweep on a random ``maintenance_chance`` per million
broker calls, and idle consumers poll about once a second per queue, so with the settings' 30 s timeout
and 10% chance a dead worker's job is redelivered roughly 30-40 s after it died.

Retries: a failed attempt is re-enqueued on the queue's delay queue after Dramatiq's exponential backoff
``min_backoff * 2**retry`` stretched by a random factor in [1, 2) (at most ``max_backoff``); after
``max_retries`` retries the message is dead-lettered (``<namespace>:<queue>.XQ``, kept 7 days).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from dramatiq.broker import Broker, MessageProxy
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import q_name
from dramatiq.message import Message
from dramatiq.middleware import Middleware

from capture_service.settings import CaptureSettings
from mesh.logging import request_id_var
from mesh.queues import CAPTURE_OWNER_TTL_SECONDS, CAPTURE_QUEUES, capture_owner_key, capture_owner_mark
from mesh.workers import AfterMessage, create_redis_broker


class RequestIdMiddleware(AfterMessage):
    """Makes the request id the edge created (``options["request_id"]``, set by the signal service) the
    current one while a message is processed, so the job's logs and its gRPC calls carry it.

    The worker thread's context is copied into the job's coroutine when Dramatiq's AsyncIO middleware
    schedules it, and the ``after_*`` hooks (e.g. a final failure report) run on the same thread.
    """

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        request_id_var.set(str(message.options.get("request_id") or uuid.uuid4().hex))

    def after_message(self, broker: Broker, message: MessageProxy, exception: BaseException | None) -> None:
        request_id_var.set("")


class CaptureOwnerMarks(Middleware):
    """Marks each capture message this worker enqueues under its signal, once Redis holds it: a dependency
    wait's or a held report's delayed copy, a retry, a delayed copy made due. The outbox relay marks the
    first one. The signal service's stale-capture sweeper then finds a capture's job by its mark, one
    lookup per candidate (signal_service/captures/queued.py).

    Written after the enqueue and before this worker acknowledges the message it copied, so that at every
    moment the mark names a message Redis holds. A mark that could not be written leaves the old one,
    which names a message about to go: the sweeper then queues one more job, which finds the capture
    done or claimed.
    """

    def after_enqueue(self, broker: Broker, message: Message[Any], delay: int | None) -> None:
        if q_name(message.queue_name) not in CAPTURE_QUEUES or not message.args:
            return
        assert isinstance(broker, RedisBroker)
        broker.client.set(
            capture_owner_key(broker.namespace, str(message.args[0])),
            capture_owner_mark(message.queue_name, message.options["redis_message_id"]),
            ex=CAPTURE_OWNER_TTL_SECONDS,
        )


def create_broker(settings: CaptureSettings, *, middleware: Sequence[Middleware] = ()) -> RedisBroker:
    """A Redis broker with the capture retry policy and time limit.

    `middleware` goes first (after the request id), so its ``after_process_message`` runs while the
    message's request id is still the current one (mesh.workers.create_redis_broker: the order).
    """
    return create_redis_broker(
        settings,
        middleware=[RequestIdMiddleware(), CaptureOwnerMarks(), *middleware],
        time_limit_ms=int(settings.capture_time_limit_seconds * 1000),
        max_retries=settings.capture_max_retries,
        min_backoff_ms=settings.capture_min_backoff_ms,
        max_backoff_ms=settings.capture_max_backoff_ms,
    )
