"""Which captures have a message in the broker, for the sweeper to leave alone.

A plan queue's messages live in Redis under ``<namespace>:<queue>.msgs`` from enqueue until a worker
acknowledges them: waiting in the queue and fetched by a worker alike. Delayed messages (a job waiting
for a dependency, an outcome held until the signal service records it, a Dramatiq retry's backoff) live
the same way on the queue's ``.DQ``. A capture with a message in either has a job that will claim or
report it, so the sweeper must not queue another.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

from dramatiq.common import dq_name
from redis.asyncio import Redis

from mesh.queues import CAPTURE_QUEUES

# Mirrors capture_service/tasks.py's HELD_REPORT_OPTION, which the signal service does not import.
HELD_REPORT_OPTION = "held_report"
_SCAN_BATCH = 500


@dataclass(slots=True)
class QueuedCaptures:
    signal_ids: set[uuid.UUID] = field(default_factory=set)
    delayed: int = 0
    held_reports: int = 0


class CaptureMessages:
    def __init__(self, redis: Redis, namespace: str) -> None:
        self._redis = redis
        self._namespace = namespace

    async def queued(self) -> QueuedCaptures:
        """Every capture with a message on a plan queue or its delay queue; raises when Redis is away."""
        found = QueuedCaptures()
        for queue in CAPTURE_QUEUES:
            for name in (queue, dq_name(queue)):
                key = f"{self._namespace}:{name}.msgs"
                async for _message_id, body in self._redis.hscan_iter(key, count=_SCAN_BATCH):
                    signal_id, held = _capture_of(body)
                    if signal_id is None:
                        continue
                    found.signal_ids.add(signal_id)
                    found.delayed += name != queue
                    found.held_reports += held
        return found


def _capture_of(body: bytes) -> tuple[uuid.UUID | None, bool]:
    """The signal id a capture message is for, and whether it carries a held report."""
    try:
        message = json.loads(body)
        signal_id = uuid.UUID(str(message["args"][0]))
    except (ValueError, KeyError, IndexError, TypeError):
        return None, False
    options = message.get("options") or {}
    return signal_id, HELD_REPORT_OPTION in options
