"""Process entry points: `alerts serve notify` calls :func:`run_worker`, `alerts serve telegram-stub`
:func:`run_telegram_stub` and `alerts serve discord-stub` :func:`run_discord_stub`."""

from __future__ import annotations

import logging
import signal
import threading

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from mesh.logging import configure_logging
from mesh.metrics import start_metrics_server
from notify_service.broker import JOB_TIME_LIMIT_MS, create_broker
from notify_service.discord_stub import run_discord_stub
from notify_service.settings import NotifySettings, get_settings
from notify_service.tasks import NotifyWorkerMiddleware, declare_notify_actor
from notify_service.telegram_stub import run_telegram_stub
from notify_service.worker import NotifyWorker

log = logging.getLogger(__name__)


def build_worker(settings: NotifySettings) -> tuple[dramatiq.Worker, RedisBroker]:
    """A Dramatiq worker on the notify queue, `notify_concurrency` jobs at a time."""
    notify_worker = NotifyWorker(settings)
    broker = create_broker(settings, middleware=[NotifyWorkerMiddleware(notify_worker)])
    declare_notify_actor(broker, notify_worker)
    # What Dramatiq's own CLI does once per process; TimeLimit only starts its watchdog on this signal.
    broker.emit_after("process_boot")
    return dramatiq.Worker(broker, worker_threads=settings.notify_concurrency), broker


def run_worker() -> None:
    """Consumes notify jobs until SIGTERM or SIGINT, then lets running jobs finish and exits."""
    settings = get_settings()
    configure_logging("notify", settings.log_level)
    start_metrics_server(settings.metrics_port)
    worker, broker = build_worker(settings)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    worker.start()
    log.info("notify worker consuming", extra={"concurrency": settings.notify_concurrency})
    while not stopping.wait(1.0):
        pass
    log.info("notify worker stopping")
    worker.stop(timeout=JOB_TIME_LIMIT_MS)
    broker.close()


__all__ = ["build_worker", "run_discord_stub", "run_telegram_stub", "run_worker"]
