from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field

from mesh.settings import CommonSettings


class PlanLimits(BaseModel):
    signals_quota: int
    # Token bucket per user: sustained webhooks per second and the burst it tolerates.
    rate_per_second: float
    rate_burst: int


def _default_plan_limits() -> dict[str, PlanLimits]:
    return {
        "free": PlanLimits(signals_quota=300, rate_per_second=1, rate_burst=10),
        "basic": PlanLimits(signals_quota=3_000, rate_per_second=2, rate_burst=20),
        "pro": PlanLimits(signals_quota=15_000, rate_per_second=5, rate_burst=50),
        "premium": PlanLimits(signals_quota=100_000, rate_per_second=10, rate_burst=100),
    }


class SignalSettings(CommonSettings):
    max_body_bytes: int = 64 * 1024
    indicators_path: Path | None = None
    dedupe_window_seconds: int = 60
    plan_limits: dict[str, PlanLimits] = Field(default_factory=_default_plan_limits)
    # The rough time one capture takes, for the estimated_wait in webhook answers.
    capture_seconds_estimate: float = 6.0
    # Captures running at once across all workers, for the same estimate.
    capture_parallelism: int = 3
    screenshot_url_ttl_seconds: int = 3600
    outbox_batch_size: int = 200
    outbox_poll_seconds: float = 1.0
    # A PROCESSING capture older than this went with its worker: the sweeper re-queues it.
    capture_stale_after_seconds: int = 120
    # Deliveries of one capture (Dramatiq's first try and its 3 retries) before a lost worker means FAILED.
    capture_max_attempts: int = 4
    sweep_interval_seconds: float = 30.0


@lru_cache
def get_settings() -> SignalSettings:
    return SignalSettings()
