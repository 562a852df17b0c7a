"""Which captures have a message in the broker, for the sweeper to leave alone.

A plan queue's messages live in Redis under ``<namespace>:<queue>.msgs`` from enqueue until a worker
acknowledges them: waiting in the queue and fetched by a worker alike. Delayed messages (a job waiting
for a dependency, an outcome held until the signal service records it, a Dramatiq retry's backoff) live
the same way on the queue's ``.DQ``. A capture with a message in either has a job that will claim or
report it, so the sweeper must not queue another.

Every capture message is marked under its signal when it is enqueued (mesh.queues.capture_owner_key: the
outbox relay for the first, the capture workers' broker for each copy), so :meth:`CaptureMessages.unowned`
asks Redis about the candidates' own messages, one lookup each. Reading and parsing every queued message
instead, every 30 s while 36,000-110,000 jobs waited for workers, slowed ingest for seconds at a time and
was the whole of its p99 tail at 3 M signals (docs/perf/scale.md, round 7). A candidate without
a mark (it expired, or the message was enqueued by a release that wrote none) is decided by reading the
queues, as before.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field

from dramatiq.common import dq_name
from redis.asyncio import Redis

from mesh.queues import CAPTURE_QUEUES, capture_owner_key

# Mirrors capture_service/tasks.py's HELD_REPORT_OPTION, which the signal service does not import.
HELD_REPORT_OPTION = "held_report"
_SCAN_BATCH = 500
# Candidates per script call: Redis runs a script to its end, so one call holds it for about a millisecond.
_LOOKUP_BATCH = 500

# For each signal id in ARGV (after the namespace and the marks' prefix): 0 when its mark names a message
# Redis holds, 1 when the mark names one that is gone, 2 when there is no mark. Keys are built here, as
# Dramatiq's own dispatch script builds its queues' keys from the namespace it is given.
_OWNERS_SCRIPT = """
local namespace, marks = ARGV[1], ARGV[2]
local found = {}
for i = 3, #ARGV do
    local mark = redis.call("GET", marks .. ARGV[i])
    if not mark then
        found[i - 2] = 2
    else
        local split = string.find(mark, "\\n", 1, true)
        local messages = namespace .. ":" .. string.sub(mark, 1, split - 1) .. ".msgs"
        found[i - 2] = 1 - redis.call("HEXISTS", messages, string.sub(mark, split + 1))
    end
end
return found
"""
_GONE, _UNMARKED = 1, 2


@dataclass(slots=True)
class QueuedCaptures:
    signal_ids: set[uuid.UUID] = field(default_factory=set)
    delayed: int = 0
    held_reports: int = 0


class CaptureMessages:
    def __init__(self, redis: Redis, namespace: str) -> None:
        self._redis = redis
        self._namespace = namespace
        self._marks = capture_owner_key(namespace, "")
        self._owners = redis.register_script(_OWNERS_SCRIPT)

    async def unowned(self, signal_ids: Collection[uuid.UUID]) -> set[uuid.UUID]:
        """Those of `signal_ids` no message in the broker owns; raises when Redis is away."""
        ordered = list(signal_ids)
        unowned: set[uuid.UUID] = set()
        unmarked: set[uuid.UUID] = set()
        for start in range(0, len(ordered), _LOOKUP_BATCH):
            batch = ordered[start : start + _LOOKUP_BATCH]
            states = await self._owners(args=[self._namespace, self._marks, *map(str, batch)])
            for signal_id, state in zip(batch, states, strict=True):
                if state == _GONE:
                    unowned.add(signal_id)
                elif state == _UNMARKED:
                    unmarked.add(signal_id)
        if unmarked:
            unowned |= unmarked - (await self.queued()).signal_ids
        return unowned

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
