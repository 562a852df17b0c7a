"""Process entry points: `alerts serve capture` calls :func:`run_worker`, `alerts serve chart-stub`
calls :func:`run_chart_stub`."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from capture_service.broker import create_broker
from capture_service.chart_stub import run_chart_stub
from capture_service.liveness import JobClock
from capture_service.session_check import declare_session_check_actor
from capture_service.settings import CaptureSettings, get_settings
from capture_service.tasks import CaptureWorkerMiddleware, declare_capture_actors
from capture_service.worker import CaptureWorker
from mesh.workers import boot_worker, run_worker_process

# Time for in-flight jobs to finish after SIGTERM, on top of their own time limit.
_SHUTDOWN_SLACK_SECONDS = 5.0


def build_worker(settings: CaptureSettings) -> tuple[dramatiq.Worker, RedisBroker]:
    """A Dramatiq worker consuming every capture queue and the session check queue, `capture_concurrency`
    jobs at a time."""
    capture_worker = CaptureWorker(settings)
    broker = create_broker(settings, middleware=[JobClock(), CaptureWorkerMiddleware(capture_worker)])
    declare_capture_actors(broker, capture_worker)
    declare_session_check_actor(broker, capture_worker)
    return boot_worker(broker, threads=settings.capture_concurrency), broker


def run_worker() -> None:
    """Consumes capture jobs until SIGTERM or SIGINT, then lets running jobs finish and exits."""
    settings = get_settings()
    run_worker_process(
        "capture",
        settings,
        lambda: build_worker(settings),
        concurrency=settings.capture_concurrency,
        stop_timeout_ms=int((settings.capture_time_limit_seconds + _SHUTDOWN_SLACK_SECONDS) * 1000),
    )


__all__ = ["build_worker", "run_chart_stub", "run_worker"]
