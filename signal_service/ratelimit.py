"""Per-key rate limits in Redis with GCRA, atomic in one Lua script so every replica shares one budget."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError

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


class RateLimiter:
    def __init__(self, redis: Redis, namespace: str) -> None:
        self._redis = redis
        self._namespace = namespace
        self._script = redis.register_script(_GCRA)

    async def acquire(self, key: str, *, rate_per_second: float, burst: int) -> RateDecision:
        interval_ms = 1000.0 / rate_per_second
        try:
            allowed, retry_ms = await self._script(
                keys=[f"{self._namespace}:ratelimit:{key}"], args=[interval_ms, max(1, burst)]
            )
        except RedisError as exc:
            # Fails open: with Redis down an alert refused here would be lost (TradingView keeps no queue),
            # while the monthly quota, in PostgreSQL, still bounds what a user can store.
            RATE_LIMIT_BYPASSED.inc()
            log.warning("rate limiter unavailable; request admitted unchecked", extra={"error": str(exc)})
            return RateDecision(True, 0.0)
        return RateDecision(bool(allowed), float(retry_ms) / 1000.0)
