"""Settings every process shares, read from ``ALERTS_*`` environment variables.

Each service extends :class:`CommonSettings` in its own ``settings.py``. Secrets have defaults only in
dev: in production a missing secret stops the process at start-up. An ``ALERTS_*`` variable that no
service reads stops it too: a misspelt name would otherwise leave its setting silently at the default.
"""

from __future__ import annotations

import difflib
import os
import secrets
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from mesh.errors import ConfigurationError
from mesh.setting_names import SETTING_NAMES

ENV_PREFIX = "ALERTS_"


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    # What this process cannot run without in production; each service names its own, so that a
    # secret only reaches the processes that use it (the internet-facing edge never holds cookie keys).
    required_in_production: ClassVar[tuple[str, ...]] = ()
    # Plain strings because the drivers take them as they are, yet they carry passwords: deploy/ keeps
    # them in Secrets and the configuration reference marks them secret, like every SecretStr field.
    credential_urls: ClassVar[frozenset[str]] = frozenset({"database_url", "redis_url"})

    env: Literal["dev", "production"] = "dev"
    # Empty means "use the embedded server"; only `alerts dev`/`demo` start one and then set these.
    database_url: str = ""
    redis_url: str = ""
    # Prefix of every Redis key this deployment writes (rate limits, Dramatiq queues), so that several
    # deployments or test sessions can share one Redis.
    redis_namespace: str = "alerts"
    database_pool_size: int = 10

    # Keys accepted from callers, plain or "sha256:<hex>", each with a role ("@role:admin|edge|worker",
    # none for the platform) or scoped to one user ("@user:<id>"); what each role may call: mesh/roles.py.
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    # The key this process presents to the other services, of its own role: the edge's an edge key, the
    # signal service's and the capture workers' a worker key.
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

    # Mutual TLS between the services (files, e.g. mounted from a Secret): all three or none. Servers
    # then accept only clients with a certificate the CA signed, and clients verify servers the same way.
    grpc_tls_cert: Path | None = None
    grpc_tls_key: Path | None = None
    grpc_tls_ca: Path | None = None

    log_level: str = "INFO"
    grpc_grace_seconds: float = 10.0

    @model_validator(mode="before")
    @classmethod
    def _refuse_unknown_variables(cls, data: object) -> object:
        refuse_unknown_variables(os.environ, known=SETTING_NAMES | env_names(cls))
        return data

    @model_validator(mode="before")
    @classmethod
    def _split_lists(cls, data: object) -> object:
        if isinstance(data, dict):
            for name in ("api_keys", "cookie_keys"):
                if name in data:
                    data[name] = _split_commas(data[name])
        return data

    @model_validator(mode="after")
    def _tls_is_all_or_nothing(self) -> CommonSettings:
        given = [self.grpc_tls_cert, self.grpc_tls_key, self.grpc_tls_ca]
        if any(given) and not all(given):
            raise ValueError("ALERTS_GRPC_TLS_CERT, ALERTS_GRPC_TLS_KEY and ALERTS_GRPC_TLS_CA go together")
        for path in given:
            if path is not None and not path.is_file():
                raise ValueError(f"{path} is not a readable file")
        return self

    @model_validator(mode="after")
    def _require_secrets_outside_dev(self) -> CommonSettings:
        if self.env == "production":
            missing = [
                f"ALERTS_{name.upper()}" for name in self.required_in_production if not getattr(self, name)
            ]
            if missing:
                raise ValueError(f"production requires {', '.join(missing)}")
        return self

    @classmethod
    def secret_fields(cls) -> frozenset[str]:
        return cls.credential_urls | {
            name for name, field in cls.model_fields.items() if _holds_secret(field.annotation)
        }

    @property
    def external_url(self) -> str:
        return (self.public_url or f"http://127.0.0.1:{self.edge_port}").rstrip("/")


class WorkerSettings(CommonSettings):
    """What the Dramatiq worker processes (capture, notify) read on top of the shared settings."""

    # A worker silent for this long is dead: its unacknowledged jobs go back on their queues.
    dramatiq_heartbeat_timeout_ms: int = Field(default=30_000, ge=1_000)
    # Out of a million broker commands, how many also run that dead-worker sweep (Dramatiq's default is
    # 1000, which with few workers takes many minutes to notice a dead one).
    dramatiq_maintenance_chance: int = Field(default=100_000, ge=1, le=1_000_000)


def _holds_secret(annotation: object) -> bool:
    return annotation is SecretStr or any(_holds_secret(arg) for arg in typing.get_args(annotation))


def env_names(settings_class: type[BaseSettings]) -> frozenset[str]:
    """The variables a settings class reads (pydantic-settings matches them case-insensitively)."""
    return frozenset(f"{ENV_PREFIX}{name}".upper() for name in settings_class.model_fields)


def refuse_unknown_variables(environ: Mapping[str, str], *, known: frozenset[str]) -> None:
    """Stops start-up on ``ALERTS_*`` variables no service reads, naming the closest real one.

    ``known`` spans every service (mesh/setting_names.py), not only the caller's: one environment is
    shared by every process of `alerts dev` and by the containers of one deployment.
    """
    unknown = sorted(
        name.upper() for name in environ if name.upper().startswith(ENV_PREFIX) and name.upper() not in known
    )
    if not unknown:
        return
    described = []
    for name in unknown:
        closest = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        described.append(f"{name} (did you mean {closest[0]}?)" if closest else name)
    noun = "setting" if len(unknown) == 1 else "settings"
    raise ConfigurationError(f"unknown {noun} {', '.join(described)}; see docs/configuration.md")


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
