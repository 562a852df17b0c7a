"""A user's notification_preferences: the shape UserService accepts, and what is stored and shown.

Shared contract: signal_service validates and stores preferences, notify_service reads them back
(over gRPC) to deliver. The webhook secret and the Discord webhook URL (whose path is itself a
credential) are secrets: `split` takes them out of the document, the signal service keeps them
encrypted apart (mesh.crypto.CookieCipher), and the stored and returned document only says they are
set (`secret_set`, `webhook_url_set`).

A preferences update that omits a secret the user already has keeps it, so that a platform can send
back what GetUser returned.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mesh.errors import InvalidArgumentError

FIELD = "notification_preferences"
REASON = "INVALID_NOTIFICATION_PREFERENCES"

WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks format's prefix, not a secret
WEBHOOK_SECRET_MIN_BYTES = 24
WEBHOOK_SECRET_MAX_BYTES = 64
MAX_URL_LENGTH = 2_048
MAX_FILTER_VALUES = 100
MAX_FILTER_VALUE_LENGTH = 100

CHANNELS = ("telegram", "discord", "webhook")

# A numeric chat id (negative for groups and channels) or a public @channelname.
_CHAT_ID = re.compile(r"^(?:-?\d{1,20}|@[A-Za-z][A-Za-z0-9_]{3,31})$")
_DISCORD_WEBHOOK_URL = re.compile(
    r"^https://(?:(?:canary|ptb)\.)?discord(?:app)?\.com/api(?:/v\d+)?/webhooks/\d{15,25}/[A-Za-z0-9_-]{20,100}$"
)

FilterValue = Annotated[str, Field(min_length=1, max_length=MAX_FILTER_VALUE_LENGTH)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class TelegramPreferences(_Strict):
    chat_id: str
    enabled: bool = True
    with_screenshot: bool = True

    @field_validator("chat_id", mode="before")
    @classmethod
    def _chat_id(cls, value: Any) -> Any:
        # A protobuf Struct carries numbers as doubles: -1001234567890 arrives as -1001234567890.0.
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not _CHAT_ID.match(value.strip()):
            raise ValueError("must be a numeric Telegram chat id or an @channel name")
        return value.strip()


class DiscordPreferences(_Strict):
    webhook_url: str | None = None
    enabled: bool = True
    # Shown instead of the URL; ignored on input.
    webhook_url_set: bool | None = None

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        if value is not None and not _DISCORD_WEBHOOK_URL.match(value):
            raise ValueError("must be a Discord webhook URL (https://discord.com/api/webhooks/<id>/<token>)")
        return value


class WebhookPreferences(_Strict):
    url: str
    secret: str | None = None
    enabled: bool = True
    # Shown instead of the secret; ignored on input.
    secret_set: bool | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if len(value) > MAX_URL_LENGTH:
            raise ValueError(f"must be at most {MAX_URL_LENGTH} characters")
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("must be an http(s) URL with a host")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials")
        return value

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        if value is not None:
            webhook_secret_bytes(value)
        return value


class Filters(_Strict):
    indicators: list[FilterValue] = Field(default_factory=list, max_length=MAX_FILTER_VALUES)
    tickers: list[FilterValue] = Field(default_factory=list, max_length=MAX_FILTER_VALUES)
    signal_types: list[FilterValue] = Field(default_factory=list, max_length=MAX_FILTER_VALUES)


class NotificationPreferences(_Strict):
    telegram: TelegramPreferences | None = None
    discord: DiscordPreferences | None = None
    webhook: WebhookPreferences | None = None
    filters: Filters | None = None


def webhook_secret_bytes(secret: str) -> bytes:
    """The key inside a Standard Webhooks ``whsec_`` secret; ValueError (never quoting it) otherwise."""
    if not secret.startswith(WEBHOOK_SECRET_PREFIX):
        raise ValueError(f"must start with {WEBHOOK_SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(WEBHOOK_SECRET_PREFIX) :], validate=True)
    except binascii.Error:
        raise ValueError("must be base64 after the prefix") from None
    if not WEBHOOK_SECRET_MIN_BYTES <= len(key) <= WEBHOOK_SECRET_MAX_BYTES:
        raise ValueError(f"must hold {WEBHOOK_SECRET_MIN_BYTES} to {WEBHOOK_SECRET_MAX_BYTES} bytes")
    return key


def parse(document: dict[str, Any]) -> NotificationPreferences:
    """The preferences a caller sent; InvalidArgumentError naming the first wrong field otherwise.

    The error never quotes the value: a wrong secret must not come back in an error text or a log.
    """
    try:
        return NotificationPreferences.model_validate(document)
    except ValidationError as exc:
        error = exc.errors(include_input=False, include_url=False)[0]
        path = ".".join(str(part) for part in (FIELD, *error["loc"]))
        message = str(error["msg"]).removeprefix("Value error, ")
        raise InvalidArgumentError(f"{path}: {message}", reason=REASON, metadata={"field": path}) from None


def split(
    preferences: NotificationPreferences, stored_secrets: dict[str, str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The document to store and show (no secret in it) and the secrets to keep encrypted.

    A secret left out of `preferences` keeps its value from `stored_secrets`; an enabled channel
    without one (given now or before) is an error naming the field.
    """
    secrets: dict[str, str] = {}
    document: dict[str, Any] = {}
    if preferences.telegram is not None:
        document["telegram"] = preferences.telegram.model_dump()
    if preferences.discord is not None:
        url = preferences.discord.webhook_url or stored_secrets.get("discord_webhook_url")
        if url is None and preferences.discord.enabled:
            _missing("discord.webhook_url")
        if url is not None:
            secrets["discord_webhook_url"] = url
        document["discord"] = {"enabled": preferences.discord.enabled, "webhook_url_set": url is not None}
    if preferences.webhook is not None:
        secret = preferences.webhook.secret or stored_secrets.get("webhook_secret")
        if secret is None and preferences.webhook.enabled:
            _missing("webhook.secret")
        if secret is not None:
            secrets["webhook_secret"] = secret
        document["webhook"] = {
            "url": preferences.webhook.url,
            "enabled": preferences.webhook.enabled,
            "secret_set": secret is not None,
        }
    if preferences.filters is not None:
        document["filters"] = preferences.filters.model_dump()
    return document, secrets


def enabled_channels(document: dict[str, Any]) -> list[str]:
    """The channels a stored document (see `split`) would deliver to."""
    channels = []
    for channel in CHANNELS:
        entry = document.get(channel)
        if isinstance(entry, dict) and entry.get("enabled", True):
            channels.append(channel)
    return channels


def _missing(path: str) -> None:
    full = f"{FIELD}.{path}"
    raise InvalidArgumentError(
        f"{full}: required to enable this channel", reason=REASON, metadata={"field": full}
    )
