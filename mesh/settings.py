"""Settings every process shares, read from ``ALERTS_*`` environment variables.

Each service extends :class:`CommonSettings` in its own ``settings.py``. Secrets have defaults only in
dev: in production a missing secret stops the process at start-up.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ALERTS_", extra="ignore", frozen=True)

    # What this process cannot run without in production; each service names its own, so that a
    # secret only reaches the processes that use it (the internet-facing edge never holds cookie keys).
    required_in_production: ClassVar[tuple[str, ...]] = ()

    env: Literal["dev", "production"] = "dev"
    # Empty means "use the embedded server"; only `alerts dev`/`demo` start one and then set these.
    database_url: str = ""
    redis_url: str = ""
    # Prefix of every Redis key this deployment writes (rate limits, Dramatiq queues), so that several
    # deployments or test sessions can share one Redis.
    redis_namespace: str = "alerts"
    database_pool_size: int = 10

    # Keys accepted from callers, plain or "sha256:<hex>", optionally scoped: "sha256:<hex>@user:<id>".
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    # The key this process presents to the other services.
    service_api_key: SecretStr | None = None

    edge_host: str = "127.0.0.1"
    edge_port: int = 8080
    signal_addr: str = "127.0.0.1:50051"
    storage_addr: str = "127.0.0.1:50052"
    # The edge's external base URL, used in webhook URLs and media links.
    public_url: str = ""
    metrics_port: int | None = None

    data_dir: Path = Path(".alerts")
    tradingview_url: str = "https://www.tradingview.com"
    # Base64 AES-256 keys as "<key id>:<base64 key>", newest first: the first encrypts, all decrypt.
    cookie_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    media_signing_key: SecretStr | None = None

    log_level: str = "INFO"
    grpc_grace_seconds: float = 10.0

    @model_validator(mode="before")
    @classmethod
    def _split_lists(cls, data: object) -> object:
        if isinstance(data, dict):
            for name in ("api_keys", "cookie_keys"):
                if name in data:
                    data[name] = _split_commas(data[name])
        return data

    @model_validator(mode="after")
    def _require_secrets_outside_dev(self) -> CommonSettings:
        if self.env == "production":
            missing = [
                f"ALERTS_{name.upper()}" for name in self.required_in_production if not getattr(self, name)
            ]
            if missing:
                raise ValueError(f"production requires {', '.join(missing)}")
        return self

    @property
    def external_url(self) -> str:
        return (self.public_url or f"http://127.0.0.1:{self.edge_port}").rstrip("/")


def dev_secret(settings: CommonSettings, name: str, size: int = 32) -> bytes:
    """A random secret persisted under the data dir, shared by the dev processes that share that dir.

    Only for dev: production settings refuse to start without their secrets configured.
    """
    if settings.env != "dev":
        raise RuntimeError(f"secret {name!r} must be configured outside dev")
    path = settings.data_dir / "secrets" / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        candidate = path.with_suffix(f".{secrets.token_hex(4)}.tmp")
        candidate.write_bytes(secrets.token_bytes(size))
        candidate.chmod(0o600)
        # A concurrent process may have created it first; link() keeps whichever came first.
        try:
            os.link(candidate, path)
        except FileExistsError:
            pass
        finally:
            candidate.unlink()
    return path.read_bytes()
