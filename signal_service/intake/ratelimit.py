"""Per-key rate limits in Redis with GCRA, atomic in one Lua script so every replica shares one budget.

Intake uses it for tokens that match no user, per source address, before any statement runs. A known
user's rate limit is checked in PostgreSQL, inside the statement that stores the webhook (migration
0004_ingest_rate_limit), so an accepted webhook costs no Redis round trip.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from mesh.coalescer import Coalescer

log = logging.getLogger(__name__)

RATE_LIMIT_BYPASSED = Counter(
    "alerts_rate_limit_unavailable_total", "Rate limit checks admitted unchecked because Redis did not answer"
)

# GCRA: the key holds the theoretical arrival time (TAT) in milliseconds of server time.
# Returns {allowed, retry_after_ms}.
_GCRA = """
local key = KEYS[1]
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tat = tonumber(redis.call('GET', key) or now)
if tat < now then tat = now end
local allow_at = tat - (burst - 1) * interval
if now < allow_at then
  return {0, allow_at - now}
end
local new_tat = tat + interval
redis.call('SET', key, new_tat, 'PX', math.ceil(new_tat - now + interval))
return {1, 0}
"""


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    retry_after_seconds: float


# One check: its Redis key, the interval between admitted calls in milliseconds, and the burst.
_Check = tuple[str, float, int]


class RateLimiter:
    """Checks go to Redis in batches: calls made while a round trip is in flight share the next one.

    Under a burst that is one pipelined round trip for many webhooks instead of one each; a lone call
    still goes at once. Each check stays its own atomic script run, so batching changes no decision.
    """

    def __init__(self, redis: Redis, namespace: str) -> None:
        self._redis = redis
        self._namespace = namespace
        self._script = redis.register_script(_GCRA)
        self._checks: Coalescer[_Check, RateDecision] = Coalescer(self._check, max_batch=1000)

    async def acquire(self, key: str, *, rate_per_second: float, burst: int) -> RateDecision:
        return await self._checks.submit(
            (f"{self._namespace}:ratelimit:{key}", 1000.0 / rate_per_second, max(1, burst))
        )

    async def _check(self, batch: list[_Check]) -> list[RateDecision]:
        try:
            return await self._decide(batch)
        except RedisError as exc:
            # Fails open: with Redis down an alert refused here would be lost (TradingView keeps no
            # queue), while the monthly quota, in PostgreSQL, still bounds what a user can store.
            RATE_LIMIT_BYPASSED.inc(len(batch))
            log.warning("rate limiter unavailable; request admitted unchecked", extra={"error": str(exc)})
            return [_ADMITTED_UNCHECKED] * len(batch)

    async def _decide(self, batch: list[_Check]) -> list[RateDecision]:
        answers = await self._run(batch)
        missing = [index for index, answer in enumerate(answers) if isinstance(answer, NoScriptError)]
        if missing:
            # Redis restarted or was flushed since the script was loaded; only the unrun checks run again.
            await self._redis.script_load(_GCRA)
            for index, answer in zip(missing, await self._run([batch[i] for i in missing]), strict=True):
                answers[index] = answer
        for answer in answers:
            if isinstance(answer, Exception):
                raise answer if isinstance(answer, RedisError) else RedisError(str(answer))
        return [RateDecision(bool(allowed), float(retry_ms) / 1000.0) for allowed, retry_ms in answers]

    async def _run(self, batch: list[_Check]) -> list[Any]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, interval_ms, burst in batch:
                pipe.evalsha(self._script.sha, 1, key, interval_ms, burst)
            return await pipe.execute(raise_on_error=False)


_ADMITTED_UNCHECKED = RateDecision(True, 0.0)
