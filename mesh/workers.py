"""The Dramatiq worker process the job services (capture_service, notify_service) both run: their Redis
broker, the middleware owning the asyncio event loop their actors run on, and the process's loop that
consumes until SIGTERM.

Each service keeps what is its own: its actors, its retry policy and time limit, its other middleware.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import dramatiq
from dramatiq.asyncio import EventLoopThread, get_event_loop_thread
from dramatiq.broker import Broker, MessageProxy
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AsyncIO, CurrentMessage, Middleware, Retries, TimeLimit

from mesh.logging import configure_logging
from mesh.metrics import start_metrics_server
from mesh.queues import dramatiq_namespace
from mesh.settings import WorkerSettings

log = logging.getLogger(__name__)


class JobRunner(Protocol):
    """What a service's actors run on: clients opened before the first job and closed after the last."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


def event_loop() -> EventLoopThread:
    """The thread running the actors' event loop, from the worker's boot to its shutdown."""
    loop_thread = get_event_loop_thread()
    if loop_thread is None:
        raise RuntimeError("the AsyncIO event loop thread is not running")
    return loop_thread


class WorkerLifecycle(AsyncIO):
    """Dramatiq's AsyncIO event loop, with a job runner's clients living on it.

    Starting them before the worker threads start means no job arrives before they are up; closing them
    after the threads stopped means no job loses them midway.
    """

    def __init__(self, runner: JobRunner) -> None:
        super().__init__()
        self.runner = runner

    def before_worker_boot(self, broker: Broker, worker: dramatiq.Worker) -> None:
        super().before_worker_boot(broker, worker)  # type: ignore[no-untyped-call]
        event_loop().run_coroutine(self.runner.start())

    def after_worker_shutdown(self, broker: Broker, worker: dramatiq.Worker) -> None:
        event_loop().run_coroutine(self.runner.close())
        super().after_worker_shutdown(broker, worker)  # type: ignore[no-untyped-call]


class AfterMessage(Middleware):
    """A middleware that acts once a worker thread is done with a message: Dramatiq calls
    ``after_process_message`` when it ran and ``after_skip_message`` when a middleware skipped it."""

    def after_message(self, broker: Broker, message: MessageProxy, exception: BaseException | None) -> None:
        """`exception` is what the actor raised; None when it returned or the message was skipped."""
        raise NotImplementedError

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        self.after_message(broker, message, exception)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        self.after_message(broker, message, None)


def create_redis_broker(
    settings: WorkerSettings,
    *,
    middleware: Sequence[Middleware],
    time_limit_ms: int,
    max_retries: int,
    min_backoff_ms: int,
    max_backoff_ms: int,
) -> RedisBroker:
    """A Redis broker in this deployment's namespace running `middleware`, then the time limit, the retry
    policy and CurrentMessage.

    Dramatiq runs ``after_*`` hooks in reverse order, so `middleware`'s ``after_process_message`` sees the
    message once Retries has decided its fate and TimeLimit has disarmed the attempt's deadline.
    """
    if not settings.redis_url:
        raise RuntimeError("ALERTS_REDIS_URL is not set (only `alerts dev` provides an embedded one)")
    return RedisBroker(
        url=settings.redis_url,
        namespace=dramatiq_namespace(settings),
        heartbeat_timeout=settings.dramatiq_heartbeat_timeout_ms,
        maintenance_chance=settings.dramatiq_maintenance_chance,
        middleware=[
            *middleware,
            TimeLimit(time_limit=time_limit_ms),
            Retries(max_retries=max_retries, min_backoff=min_backoff_ms, max_backoff=max_backoff_ms),
            CurrentMessage(),
        ],
    )


def boot_worker(broker: Broker, *, threads: int) -> dramatiq.Worker:
    """A worker for the actors declared on `broker`, running `threads` jobs at a time."""
    # What Dramatiq's own CLI does once per process; TimeLimit only starts its watchdog on this signal.
    broker.emit_after("process_boot")
    return dramatiq.Worker(broker, worker_threads=threads)


def run_worker_process(
    name: str,
    settings: WorkerSettings,
    build: Callable[[], tuple[dramatiq.Worker, Broker]],
    *,
    concurrency: int,
    stop_timeout_ms: int,
) -> None:
    """Logs as `name`, serves metrics, then consumes with the worker `build` returns until SIGTERM or SIGINT;
    running jobs then have `stop_timeout_ms` to finish before the broker closes."""
    configure_logging(name, settings.log_level)
    start_metrics_server(settings.metrics_port)
    worker, broker = build()
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    worker.start()
    log.info(f"{name} worker consuming", extra={"concurrency": concurrency})
    while not stopping.wait(1.0):
        pass
    log.info(f"{name} worker stopping")
    worker.stop(timeout=stop_timeout_ms)
    broker.close()
