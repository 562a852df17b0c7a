"""Notify worker settings: ``ALERTS_*`` variables on top of the shared ones."""

from __future__ import annotations

from functools import lru_cache
from typing import ClassVar

from pydantic import Field, SecretStr

from mesh.settings import WorkerSettings


class NotifySettings(WorkerSettings):
    required_in_production: ClassVar[tuple[str, ...]] = (
        "redis_url",
        "service_api_key",
        "cookie_keys",
        "telegram_bot_token",
    )

    # The platform's Telegram bot; without it Telegram deliveries fail with that reason.
    telegram_bot_token: SecretStr | None = None
    # The Bot API origin: the public one in production, the Telegram stub under `alerts dev`/`demo`.
    telegram_api_url: str = "https://api.telegram.org"
    # Receive the bot's messages (a trader's `/start <code>`) by polling getUpdates: `alerts dev`/`demo`.
    # In production Telegram posts them to the edge's webhook instead (ALERTS_TELEGRAM_WEBHOOK_SECRET).
    telegram_poll_updates: bool = False
    # Discord's API origin for webhook calls: Discord's own in production, the Discord stub under
    # `alerts dev`/`demo`. Stored webhook URLs name the webhook; their calls go here.
    discord_api_url: str = "https://discord.com/api"
    # How long an alert waits for its chart before it goes out as text (the chart then follows as a reply).
    notify_screenshot_wait_seconds: int = Field(default=30, ge=0, le=300)
    # Lets user-supplied URLs (webhooks, Discord) reach loopback, for local stubs; never in production.
    notify_allow_loopback: bool = False
    # A delivery still failing this long after it became due is given up (DEAD); `alerts notifications
    # retry` puts it back.
    notify_delivery_deadline_seconds: float = Field(default=3_600.0, gt=0)
    # Deliveries one worker process sends at once (Dramatiq worker threads on one event loop).
    notify_concurrency: int = Field(default=8, ge=1, le=64)
    # How long a claimed delivery is held for this worker; after it another worker may send it.
    notify_lease_seconds: int = Field(default=60, ge=5, le=300)
    # Retry n of a failed send waits about min_backoff * 2**n (with jitter), at most max_backoff.
    notify_min_backoff_ms: int = Field(default=1_000, ge=1)
    notify_max_backoff_ms: int = Field(default=60_000, ge=1)
    # Budget of one HTTP call to a provider.
    notify_http_timeout_seconds: float = Field(default=10.0, gt=0)
    # How this worker names itself to the signal service; empty means "<hostname>:<pid>".
    notify_worker_id: str = ""


@lru_cache
def get_settings() -> NotifySettings:
    return NotifySettings()
