"""Storage service configuration: which backend, and how to reach it (``ALERTS_STORAGE_*``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import SecretStr, model_validator

from mesh.settings import CommonSettings


class StorageSettings(CommonSettings):
    required_in_production: ClassVar[tuple[str, ...]] = ("api_keys", "media_signing_key")

    storage_backend: Literal["local", "gcs", "s3"] = "local"
    # A public bucket or a CDN in front of the gcs or s3 backend: URLs become "{base}/{key}" and never
    # expire, and objects are written with the Cache-Control below so that the CDN keeps them.
    storage_public_base_url: str = ""
    storage_public_cache_control: str = "public, max-age=31536000, immutable"
    storage_max_object_bytes: int = 64 * 1024 * 1024

    # local: defaults to {data_dir}/objects
    storage_local_dir: Path | None = None

    # gcs: the endpoint is for emulators; without a credentials file Application Default Credentials apply.
    storage_gcs_bucket: str = ""
    storage_gcs_project: str = ""
    storage_gcs_endpoint: str = ""
    storage_gcs_credentials_file: str = ""

    # s3: R2 is endpoint https://<account>.r2.cloudflarestorage.com with region "auto".
    storage_s3_bucket: str = ""
    storage_s3_endpoint_url: str = ""
    storage_s3_region: str = ""
    storage_s3_access_key_id: str = ""
    storage_s3_secret_access_key: SecretStr | None = None
    storage_s3_addressing_style: Literal["auto", "path", "virtual"] = "auto"

    @model_validator(mode="after")
    def _require_backend_settings(self) -> StorageSettings:
        if self.storage_backend == "gcs" and not self.storage_gcs_bucket:
            raise ValueError("the gcs storage backend requires ALERTS_STORAGE_GCS_BUCKET")
        if self.storage_backend == "s3" and not self.storage_s3_bucket:
            raise ValueError("the s3 storage backend requires ALERTS_STORAGE_S3_BUCKET")
        if self.storage_public_base_url and self.storage_backend == "local":
            raise ValueError(
                "ALERTS_STORAGE_PUBLIC_BASE_URL needs the gcs or s3 backend: local objects are served only"
                " through signed edge URLs"
            )
        if self.storage_max_object_bytes <= 0:
            raise ValueError("ALERTS_STORAGE_MAX_OBJECT_BYTES must be positive")
        return self

    @property
    def object_cache_control(self) -> str | None:
        """Cache-Control written on cloud objects: only public objects may be cached by a CDN."""
        return self.storage_public_cache_control if self.storage_public_base_url else None

    @property
    def local_objects_dir(self) -> Path:
        return self.storage_local_dir or self.data_dir / "objects"


@lru_cache(maxsize=1)
def get_settings() -> StorageSettings:
    return StorageSettings()
