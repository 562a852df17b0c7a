"""The names the signal service and the capture workers agree on, without importing each other."""

from __future__ import annotations

from mesh.settings import CommonSettings

CAPTURE_ACTOR = "capture_screenshot"
# Highest priority first: under backlog a worker takes premium jobs before any other.
PLANS_BY_PRIORITY = ("premium", "pro", "basic", "free")


def capture_queue(plan: str) -> str:
    return f"capture.{plan}"


CAPTURE_QUEUES = tuple(capture_queue(plan) for plan in PLANS_BY_PRIORITY)


def dramatiq_namespace(settings: CommonSettings) -> str:
    """Dramatiq's Redis key prefix: queue `capture.free` lives at `<namespace>:capture.free`."""
    return f"{settings.redis_namespace}:dramatiq"


def capture_workers_key(settings: CommonSettings) -> str:
    """A sorted set of capture worker ids scored by their last heartbeat (Unix milliseconds).

    Workers refresh their entry every few seconds and remove it on a clean shutdown; a worker whose entry
    is older than WORKER_HEARTBEAT_TIMEOUT_MS is gone.
    """
    return f"{settings.redis_namespace}:capture:workers"


WORKER_HEARTBEAT_TIMEOUT_MS = 30_000
