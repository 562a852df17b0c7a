"""Process entry points: `alerts serve notify` calls :func:`run_worker`, `alerts serve telegram-stub`
:func:`run_telegram_stub` and `alerts serve discord-stub` :func:`run_discord_stub`."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from mesh.workers import WorkerLifecycle, boot_worker, run_worker_process
from notify_service.broker import JOB_TIME_LIMIT_MS, create_broker
from notify_service.discord_stub import run_discord_stub
from notify_service.settings import NotifySettings, get_settings
from notify_service.tasks import declare_notify_actor
from notify_service.telegram_stub import run_telegram_stub
from notify_service.worker import NotifyWorker


def build_worker(settings: NotifySettings) -> tuple[dramatiq.Worker, RedisBroker]:
    """A Dramatiq worker on the notify queue, `notify_concurrency` jobs at a time."""
    notify_worker = NotifyWorker(settings)
    broker = create_broker(settings, middleware=[WorkerLifecycle(notify_worker)])
    declare_notify_actor(broker, notify_worker)
    return boot_worker(broker, threads=settings.notify_concurrency), broker


def run_worker() -> None:
    """Consumes notify jobs until SIGTERM or SIGINT, then lets running jobs finish and exits."""
    settings = get_settings()
    run_worker_process(
        "notify",
        settings,
        lambda: build_worker(settings),
        concurrency=settings.notify_concurrency,
        stop_timeout_ms=JOB_TIME_LIMIT_MS,
    )


__all__ = ["build_worker", "run_discord_stub", "run_telegram_stub", "run_worker"]
