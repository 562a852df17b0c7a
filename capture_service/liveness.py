"""What the capture liveness probe (deploy/healthcheck.py capture-alive) reads from /metrics.

The metrics server runs on a thread of its own and keeps answering when the worker is stuck, so answering
proves nothing. Two timestamps do:

- the heartbeat, written from the actors' event loop (CaptureWorker's heartbeat loop): it stops when that
  loop is blocked, and every capture runs on it;
- the start of the oldest job still running, written from the Dramatiq worker threads around each message:
  a job that outlived its time limit by far means its thread is stuck (the time limit did not stop it).
"""

from __future__ import annotations

import threading
import time

from dramatiq import Broker
from dramatiq.broker import MessageProxy
from prometheus_client import Gauge

from mesh.workers import AfterMessage

HEARTBEAT = Gauge(
    "alerts_capture_heartbeat_timestamp_seconds", "Unix time of the capture event loop's last heartbeat"
)
OLDEST_JOB_STARTED = Gauge(
    "alerts_capture_oldest_job_started_timestamp_seconds",
    "Unix time the oldest job still running in this worker started; 0 when none runs",
)


def beat() -> None:
    HEARTBEAT.set(time.time())


class JobClock(AfterMessage):
    """Keeps OLDEST_JOB_STARTED current from the worker threads that run the jobs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started: dict[str, float] = {}

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        with self._lock:
            self._started[message.message_id] = time.time()
            self._publish()

    def after_message(self, broker: Broker, message: MessageProxy, exception: BaseException | None) -> None:
        with self._lock:
            self._started.pop(message.message_id, None)
            self._publish()

    def _publish(self) -> None:
        OLDEST_JOB_STARTED.set(min(self._started.values(), default=0))
