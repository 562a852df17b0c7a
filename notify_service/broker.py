"""The Dramatiq broker notify workers consume from: the `notify` queue, delivered at least once.

A worker that dies mid-job leaves its message unacknowledged; Dramatiq's maintenance pushes it back once
the worker's heartbeat is older than ``dramatiq_heartbeat_timeout_ms``. The ledger's lease then lets the
redelivered job claim what the dead worker held. Retries here cover the worker's own failures (the signal
service unreachable); a provider's failures are retried through the ledger (notify_service/worker.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware

from mesh.workers import create_redis_broker
from notify_service.settings import NotifySettings

# One job claims, sends and reports a signal's due deliveries: a few provider calls at most.
JOB_TIME_LIMIT_MS = 120_000


def create_broker(settings: NotifySettings, *, middleware: Sequence[Middleware]) -> RedisBroker:
    return create_redis_broker(
        settings,
        middleware=middleware,
        time_limit_ms=JOB_TIME_LIMIT_MS,
        max_retries=20,
        min_backoff_ms=settings.notify_min_backoff_ms,
        max_backoff_ms=settings.notify_max_backoff_ms,
    )
