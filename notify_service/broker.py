"""The Dramatiq broker notify workers consume from: the `notify` queue, delivered at least once.

A worker that dies mid-job leaves its message unacknowledged; Dramatiq's maintenance pushes it back once
the worker's heartbeat is older than ``dramatiq_heartbeat_timeout_ms``. The ledger's lease then lets the
redelivered job claim what the dead worker held. Retries here cover the worker's own failures (the signal
service unreachable); a provider's failures are retried through the ledger (notify_service/worker.py).
"""

from __future__ import annotations

from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage, Middleware, Retries, TimeLimit

from mesh.queues import dramatiq_namespace
from notify_service.settings import NotifySettings

# One job claims, sends and reports a signal's due deliveries: a few provider calls at most.
JOB_TIME_LIMIT_MS = 120_000


def create_broker(settings: NotifySettings, *, middleware: list[Middleware]) -> RedisBroker:
    if not settings.redis_url:
        raise RuntimeError("ALERTS_REDIS_URL is not set (only `alerts dev` provides an embedded one)")
    return RedisBroker(
        url=settings.redis_url,
        namespace=dramatiq_namespace(settings),
        heartbeat_timeout=settings.dramatiq_heartbeat_timeout_ms,
        maintenance_chance=settings.dramatiq_maintenance_chance,
        middleware=[
            *middleware,
            TimeLimit(time_limit=JOB_TIME_LIMIT_MS),
            Retries(
                max_retries=20,
                min_backoff=settings.notify_min_backoff_ms,
                max_backoff=settings.notify_max_backoff_ms,
            ),
            CurrentMessage(),
        ],
    )
