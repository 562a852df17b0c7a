from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field, field_validator

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
    # An identical body from the same user within this window is a TradingView re-send, not a new alert.
    dedupe_window_seconds: int = Field(default=60, ge=0)
    # JSON, e.g. ALERTS_PLAN_LIMITS='{"free": {"signals_quota": 100, "rate_per_second": 0.5,
    # "rate_burst": 5}}'; plans left out keep their defaults.
    plan_limits: dict[str, PlanLimits] = Field(default_factory=_default_plan_limits)
    # How long intake trusts a token -> user lookup for admission; the store re-verifies it under the
    # user's lock, so a rotated token, a disabled webhook or a new allowlist apply at once. 0 disables.
    webhook_user_cache_seconds: float = Field(default=60.0, ge=0)
    # Per source address, for tokens that are malformed or match no user: slows token guessing without
    # touching real users, whose known tokens never count against it.
    unknown_token_rate_per_second: float = Field(default=5.0, gt=0)
    unknown_token_burst: int = Field(default=20, ge=1)
    # `alerts audit prune` deletes audit rows older than this.
    audit_retention_days: int = Field(default=90, ge=1)
    # The rough time one capture takes, for the estimated_wait in webhook answers.
    capture_seconds_estimate: float = 6.0
    # Captures running at once across all workers, for the same estimate.
    capture_parallelism: int = 3
    screenshot_url_ttl_seconds: int = 3600
    outbox_batch_size: int = 200
    outbox_poll_seconds: float = 1.0
    # Intake wakes the relay at most this often: captures take seconds, and a pass per webhook would not.
    outbox_kick_delay_seconds: float = Field(default=0.02, ge=0)
    # A PROCESSING capture older than this went with its worker: the sweeper re-queues it.
    capture_stale_after_seconds: int = 120
    # Deliveries of one capture (Dramatiq's first try and its 3 retries) before a lost worker means FAILED.
    capture_max_attempts: int = 4
    sweep_interval_seconds: float = 30.0

    @field_validator("plan_limits", mode="after")
    @classmethod
    def _every_plan_has_limits(cls, value: dict[str, PlanLimits]) -> dict[str, PlanLimits]:
        return _default_plan_limits() | value


@lru_cache
def get_settings() -> SignalSettings:
    return SignalSettings()
