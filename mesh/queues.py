"""The names the signal service and the capture workers agree on, without importing each other."""

from __future__ import annotations

from mesh.settings import CommonSettings

CAPTURE_ACTOR = "capture_screenshot"
# Highest priority first: under backlog a worker takes premium jobs before any other.
PLANS_BY_PRIORITY = ("premium", "pro", "basic", "free")


def capture_queue(plan: str) -> str:
    return f"capture.{plan}"


def capture_actor(plan: str) -> str:
    """One actor per plan: a Dramatiq worker orders work by actor priority, so premium's goes first."""
    return f"{CAPTURE_ACTOR}_{plan}"


CAPTURE_QUEUES = tuple(capture_queue(plan) for plan in PLANS_BY_PRIORITY)

# TradingView session checks: one queue and actor, below every plan's captures (capture_service/tasks.py),
# so a check only runs on a worker thread no capture is waiting for. Not among CAPTURE_QUEUES: the
# capture backlog figures and autoscaling count captures only.
SESSION_CHECK_QUEUE = "capture.session_check"
SESSION_CHECK_ACTOR = "check_tradingview_session"


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

# Notifications: the notify_feed() trigger (signal_service/notifications/sql/) queues a signal under these
# names; notify_service's actor claims its due deliveries.
NOTIFY_QUEUE = "notify"
NOTIFY_ACTOR = "deliver_notifications"


# Each capture message names itself under its signal: the relay and the capture workers write the queue
# and Redis id of every capture message they enqueue (the outbox's, a dependency wait's or held report's
# delayed copy, a retry, a delayed copy made due), so the stale-capture sweeper asks Redis about its
# candidates' own messages instead of reading every queued one. A day bounds the marks' memory; a capture
# whose message waited longer has no mark, and the sweeper reads the queues for it.
CAPTURE_OWNER_TTL_SECONDS = 86_400


def capture_owner_key(namespace: str, signal_id: str) -> str:
    """The mark of the newest message enqueued for a capture, under Dramatiq's `namespace`."""
    return f"{namespace}:capture.owner:{signal_id}"


def capture_owner_mark(queue_name: str, redis_message_id: str) -> str:
    """The mark's value: the queue (its .DQ when delayed) and the id its messages hash keeps it under."""
    return f"{queue_name}\n{redis_message_id}"
