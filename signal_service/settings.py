from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, Field, SecretStr, field_validator

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


def _default_retention_days() -> dict[str, float]:
    return {"free": 30, "basic": 90, "pro": 180, "premium": 365}


class DatabaseJobSettings(CommonSettings):
    """For one-off jobs on the database (`alerts migrate`, `alerts audit prune`): the database is all
    they need, so their pods get no other secret."""

    required_in_production: ClassVar[tuple[str, ...]] = ("database_url",)
    # `alerts audit prune` deletes audit rows older than this.
    audit_retention_days: int = Field(default=90, ge=1)
    # The indicator catalog (TOML or YAML); unset: the shipped one. Migrations read it too, to derive the
    # indicator keys of signals stored before keys existed.
    indicators_path: Path | None = None


class SignalSettings(DatabaseJobSettings):
    required_in_production: ClassVar[tuple[str, ...]] = (
        "database_url",
        "redis_url",
        "api_keys",
        "service_api_key",
        "cookie_keys",
        "access_token_signing_key",
    )

    max_body_bytes: int = 64 * 1024
    # Signs and verifies access tokens (CreateAccessToken), at least 32 bytes; only the signal service
    # holds it. In dev, when unset, a random one persisted under the data dir.
    access_token_signing_key: SecretStr | None = None
    # The lifetime of an access token asked for with ttl_seconds 0, and the longest one may ask for.
    access_token_default_ttl_seconds: int = Field(default=3_600, ge=60)
    access_token_max_ttl_seconds: int = Field(default=86_400, ge=60)
    # How often every replica reads the revocations (RevokeAccessTokens promises 5 s).
    access_token_revocation_poll_seconds: float = Field(default=1.0, gt=0, le=4)
    # How often every replica reloads the API keys created at runtime (RevokeApiKey promises 5 s).
    api_key_refresh_seconds: float = Field(default=1.0, gt=0, le=4)
    # An identical body from the same user within this window is a TradingView re-send, not a new alert.
    dedupe_window_seconds: int = Field(default=60, ge=0)
    # JSON, e.g. ALERTS_PLAN_LIMITS='{"free": {"signals_quota": 100, "rate_per_second": 0.5,
    # "rate_burst": 5}}'; plans left out keep their defaults.
    plan_limits: dict[str, PlanLimits] = Field(default_factory=_default_plan_limits)
    # How long intake trusts a token -> user lookup for admission; the store re-verifies it under the
    # user's lock, so a rotated token, a disabled webhook or a new allowlist apply at once. 0 disables.
    # An hour: most users alert on 15-minute to hourly candles, and a staleness costs one extra read.
    webhook_user_cache_seconds: float = Field(default=3600.0, ge=0)
    # Per source address, for tokens that are malformed or match no user: slows token guessing without
    # touching real users, whose known tokens never count against it.
    unknown_token_rate_per_second: float = Field(default=5.0, gt=0)
    unknown_token_burst: int = Field(default=20, ge=1)
    # The rough time one capture takes, for the estimated_wait in webhook answers.
    capture_seconds_estimate: float = 6.0
    # Captures running at once across all workers, for the same estimate.
    capture_parallelism: int = 3
    screenshot_url_ttl_seconds: int = 3600
    # Open SubscribeSignals streams (the edge's SSE streams among them) of one user in one process,
    # whichever keys opened them. One more is RESOURCE_EXHAUSTED (REST 429).
    stream_max_per_user: int = Field(default=5, ge=1)
    # Open streams of one API key in one process. The platform's key carries every user's streams, hence
    # the larger figure; a user-scoped key is held to the per-user limit anyway.
    stream_max_per_key: int = Field(default=1000, ge=1)
    # ListSignals and ListFailedCaptures pages end early (with a next_page_token) rather than grow past
    # this many bytes: under the 8 MiB message limit of gRPC clients, with room for the rest.
    list_page_max_bytes: int = Field(default=4 * 1024 * 1024, ge=64 * 1024)
    # Group commit (intake/group_commit.py): transactions storing webhooks at once, and webhooks
    # per transaction. More transactions at once help only while PostgreSQL has idle cores.
    ingest_group_commit_max_inflight: int = Field(default=2, ge=1)
    ingest_group_commit_max_batch: int = Field(default=128, ge=1)
    outbox_batch_size: int = 200
    outbox_poll_seconds: float = 1.0
    # Intake wakes the relay at most this often: captures take seconds, and a pass per webhook would not.
    outbox_kick_delay_seconds: float = Field(default=0.1, ge=0)
    # A PROCESSING capture older than this went with its worker: the sweeper re-queues it.
    capture_stale_after_seconds: int = 120
    # Deliveries of one capture (Dramatiq's first try and its 3 retries) before a lost worker means FAILED.
    capture_max_attempts: int = 4
    sweep_interval_seconds: float = 30.0
    # A PENDING capture untouched this long with no outbox row and no message in the broker (queued,
    # fetched or delayed; signal_service/captures/queued.py) lost its queue message: the sweeper re-queues it.
    capture_pending_stale_after_seconds: int = 180
    # TradingView session checks (sessions/service.py). A user with stored cookies and a signal in
    # the last `session_check_active_days` is checked once per interval; a check that was queued but gave
    # no result is queued again after the spacing at the earliest, so no user is checked more often than
    # once per spacing by the scheduler.
    session_check_interval_seconds: float = Field(default=86_400.0, gt=0)
    session_check_min_spacing_seconds: float = Field(default=3_600.0, gt=0)
    session_check_active_days: float = Field(default=7.0, gt=0)
    session_check_tick_seconds: float = Field(default=60.0, gt=0)
    session_check_batch_size: int = Field(default=200, ge=1)
    # A claimed check without a result for this long is given up (its worker died): another may start.
    # Covers one attempt and its retry backoff (ALERTS_CAPTURE_TIME_LIMIT_SECONDS, capture backoff).
    session_check_lease_seconds: float = Field(default=120.0, gt=0)
    # SetTradingViewSession waits this long for the new cookies' check when a capture worker is alive;
    # after that (or with no worker) it answers with the session not yet checked. 0 never waits.
    session_check_wait_seconds: float = Field(default=20.0, ge=0)
    # New cookies re-queue the user's captures that failed for an invalid session, for signals this recent.
    session_requeue_window_seconds: float = Field(default=86_400.0, ge=0)
    # Screenshot retention in days by plan (retention/service.py), e.g.
    # ALERTS_SCREENSHOT_RETENTION_DAYS='{"free": 14}'; plans left out keep their defaults.
    screenshot_retention_days: dict[str, float] = Field(default_factory=_default_retention_days)
    retention_interval_seconds: float = Field(default=3_600.0, gt=0)
    # After a pass that failed (a deletion refused, the database away): the next try, instead of a whole
    # retention_interval_seconds later.
    retention_retry_seconds: float = Field(default=60.0, gt=0)
    retention_batch_size: int = Field(default=100, ge=1)
    storage_usage_refresh_seconds: float = Field(default=300.0, gt=0)
    # The platform bot's username (without @), for the https://t.me/<bot>?start=<code> links of
    # CreateTelegramLink; unset, that RPC answers FAILED_PRECONDITION.
    telegram_bot_username: str | None = Field(default=None, pattern=r"^[A-Za-z][A-Za-z0-9_]{3,31}$")
    # How long a CreateTelegramLink code can be used.
    telegram_link_ttl_seconds: int = Field(default=900, ge=60, le=7 * 86_400)

    @field_validator("access_token_signing_key", mode="after")
    @classmethod
    def _signing_key_is_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < 32:
            raise ValueError("the access token signing key needs at least 32 bytes")
        return value

    @field_validator("plan_limits", mode="after")
    @classmethod
    def _every_plan_has_limits(cls, value: dict[str, PlanLimits]) -> dict[str, PlanLimits]:
        return _default_plan_limits() | value

    @field_validator("screenshot_retention_days", mode="after")
    @classmethod
    def _every_plan_has_retention(cls, value: dict[str, float]) -> dict[str, float]:
        if any(days <= 0 for days in value.values()):
            raise ValueError("retention days must be positive")
        return _default_retention_days() | value


@lru_cache
def get_settings() -> SignalSettings:
    return SignalSettings()
