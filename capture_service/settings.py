"""Capture worker settings: ``ALERTS_*`` variables on top of the shared ones."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import ClassVar

from pydantic import Field, model_validator

from mesh.settings import WorkerSettings


class CaptureSettings(WorkerSettings):
    required_in_production: ClassVar[tuple[str, ...]] = ("redis_url", "service_api_key", "cookie_keys")

    # Chromium to drive; empty picks Playwright's bundled browser when installed, else the system one.
    chromium_path: Path | None = None
    # Jobs one worker process runs at once (Dramatiq worker threads sharing one Chromium).
    capture_concurrency: int = Field(default=3, ge=1, le=32)
    capture_viewport_width: int = Field(default=1280, ge=320)
    capture_viewport_height: int = Field(default=720, ge=240)
    # Budget for the browser part of one attempt: navigation, readiness and the screenshot.
    capture_timeout_seconds: float = Field(default=20.0, gt=0)
    # Hard limit for a whole attempt (claim, browser, upload, report); Dramatiq interrupts it after this.
    capture_time_limit_seconds: float = Field(default=30.0, gt=0)
    capture_max_retries: int = Field(default=3, ge=0)
    # One session check is one request to TradingView's home page (plus its redirects) under this budget.
    session_check_timeout_seconds: float = Field(default=10.0, gt=0)
    # Retry n (0-based) waits between min_backoff * 2**n and twice that (Dramatiq's jitter), capped below
    # by max_backoff: 2-4 s, 4-8 s, 8-16 s by default.
    capture_min_backoff_ms: int = Field(default=2_000, ge=1)
    capture_max_backoff_ms: int = Field(default=16_000, ge=1)
    # An attempt that could not reach the signal or storage service (or their database) waits and tries
    # again without using up a retry, backing off from min to max; after this long it is FAILED with
    # reason infrastructure_unavailable.
    capture_infrastructure_deadline_seconds: float = Field(default=600.0, gt=0)
    capture_infrastructure_min_backoff_ms: int = Field(default=1_000, ge=1)
    capture_infrastructure_max_backoff_ms: int = Field(default=30_000, ge=1)
    # How this worker names itself to the signal service; empty means "<hostname>:<pid>".
    capture_worker_id: str = ""

    @model_validator(mode="after")
    def _budget_fits_time_limit(self) -> CaptureSettings:
        if self.capture_timeout_seconds >= self.capture_time_limit_seconds:
            raise ValueError("ALERTS_CAPTURE_TIMEOUT_SECONDS must be below ALERTS_CAPTURE_TIME_LIMIT_SECONDS")
        return self


@lru_cache
def get_settings() -> CaptureSettings:
    return CaptureSettings()
