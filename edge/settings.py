from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from typing import Annotated, ClassVar

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from mesh.settings import CommonSettings

_TELEGRAM_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")


class EdgeSettings(CommonSettings):
    required_in_production: ClassVar[tuple[str, ...]] = ("service_api_key", "media_signing_key")

    # Networks whose X-Forwarded-For is believed (a load balancer, Envoy); empty trusts nobody.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Believe X-Forwarded-Client-Cert from a trusted proxy. Only behind Envoy's TradingView client-certificate
    # config (deploy/envoy/envoy-tradingview-client-certificate.yaml), which verifies the certificate and
    # replaces any copy a client sent; anywhere else a client could forge the header.
    trust_forwarded_client_cert: bool = False
    # TradingView gives up after 3 s: answer well within that, or spool and answer 202.
    ingest_timeout_seconds: float = 2.0
    # Batching (edge/batching.py): BatchIngestWebhooks calls out at once, and webhooks per call.
    ingest_batch_max_inflight: int = Field(default=2, ge=1)
    ingest_batch_max_size: int = Field(default=200, ge=1, le=1000)
    # Load shedding into the spool: a webhook arriving while the oldest one not yet sent to the signal
    # service has waited this long is spooled at once and answered 202. A burst larger than the signal
    # service can take in time is then answered within TradingView's 3 s instead of timing out, and
    # stored as the spool drains. 0 turns shedding off (webhooks then wait up to ingest_timeout_seconds).
    shed_after_queue_delay_seconds: float = Field(default=0.5, ge=0)
    # Bodies over the webhook limit are refused, but read up to this much so that the refusal is audited.
    max_read_bytes: int = 1024 * 1024
    webhook_body_limit: int = 64 * 1024
    # A body still arriving after this long is refused with 408 (slowloris); TradingView itself gives up
    # after 3 s, so no real alert is that slow.
    body_read_timeout_seconds: float = 5.0
    # Header floods are refused with 431 before any work, on every route; TradingView sends about ten
    # headers.
    max_header_count: int = Field(default=100, ge=1)
    max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    # A request head (request line and headers) still incomplete after this many bytes is refused with 431
    # by the HTTP protocol itself, before anything is parsed into memory (edge/http_protocol.py).
    max_request_head_bytes: int = Field(default=64 * 1024, ge=4096)
    # A connection must deliver a complete request head this soon after it opens (or after its first byte
    # for a kept-alive connection's next request), else it is closed: uvicorn itself starts no timer
    # before the first request, so an idle or trickling client would hold its connection for ever.
    header_read_timeout_seconds: float = Field(default=5.0, gt=0)
    # An idle kept-alive connection is closed after this long.
    keep_alive_timeout_seconds: float = Field(default=5.0, gt=0)
    # Connections (and requests in flight) per edge process; past it uvicorn answers 503 at once.
    max_connections: int = Field(default=2048, ge=1)
    # Uvicorn worker processes of one edge.
    edge_workers: int = Field(default=1, ge=1)
    # The spool under ALERTS_DATA_DIR/spool keeps webhooks while the signal service is away; when it holds
    # this many bytes, further ones are refused with 503 (TradingView then re-sends).
    spool_max_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    # What one source (an IPv4 address, an IPv6 /64) may hold of it; beyond, its webhooks get 503 too.
    # TradingView sends from a handful of addresses, so this is a share, not a per-client allowance.
    spool_max_bytes_per_source: int = Field(default=64 * 1024 * 1024, gt=0)
    # Replays are not racing TradingView's 3 s: give a recovering signal service time to answer.
    spool_replay_timeout_seconds: float = Field(default=10.0, gt=0)
    # The replayer retries a signal service that does not answer yet at most this far apart.
    spool_replay_max_backoff_seconds: float = Field(default=5.0, gt=0)
    # The secret_token given to Telegram's setWebhook for the platform's bot (1 to 256 of A-Z, a-z, 0-9,
    # _ and -): Telegram sends it back in X-Telegram-Bot-Api-Secret-Token with every update posted to
    # /telegram/webhook. Unset, that route answers 404 (dev polls for updates instead).
    telegram_webhook_secret: SecretStr | None = None

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        # Anything but a list of networks is left to the field's own validation to refuse.
        if isinstance(value, list | tuple | set | frozenset):
            for entry in value:
                ipaddress.ip_network(entry, strict=False)
        return value

    @field_validator("telegram_webhook_secret", mode="after")
    @classmethod
    def _telegram_secret_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _TELEGRAM_SECRET.fullmatch(value.get_secret_value()):
            raise ValueError("must be 1 to 256 of A-Z, a-z, 0-9, _ and - (Telegram's secret_token)")
        return value

    @model_validator(mode="after")
    def _client_cert_needs_a_proxy(self) -> EdgeSettings:
        if self.trust_forwarded_client_cert and not self.trusted_proxies:
            raise ValueError(
                "ALERTS_TRUST_FORWARDED_CLIENT_CERT needs ALERTS_TRUSTED_PROXIES: the proxy that sets it"
            )
        return self


@lru_cache
def get_settings() -> EdgeSettings:
    return EdgeSettings()
