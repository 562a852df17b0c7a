from pathlib import Path

import pytest
from pydantic import ValidationError

from storage_service.backends.local import LocalBackend
from storage_service.service import build_backend
from storage_service.settings import StorageSettings


def test_local_backend_is_the_default_under_the_data_dir(tmp_path: Path) -> None:
    settings = StorageSettings(data_dir=tmp_path)
    assert settings.storage_backend == "local"
    assert settings.local_objects_dir == tmp_path / "objects"
    backend = build_backend(settings)
    assert isinstance(backend, LocalBackend)
    assert backend.root == tmp_path / "objects"


@pytest.mark.parametrize(
    ("backend", "variable"), [("gcs", "ALERTS_STORAGE_GCS_BUCKET"), ("s3", "ALERTS_STORAGE_S3_BUCKET")]
)
def test_cloud_backends_require_a_bucket(tmp_path: Path, backend: str, variable: str) -> None:
    with pytest.raises(ValidationError, match=variable):
        StorageSettings(data_dir=tmp_path, storage_backend=backend)


def test_public_base_url_needs_a_cloud_backend(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="ALERTS_STORAGE_PUBLIC_BASE_URL"):
        StorageSettings(data_dir=tmp_path, storage_public_base_url="https://cdn.example.com")
    public = StorageSettings(
        data_dir=tmp_path, storage_backend="s3", storage_s3_bucket="b", storage_public_base_url="https://cdn"
    )
    assert public.object_cache_control == "public, max-age=31536000, immutable"
    private = StorageSettings(data_dir=tmp_path, storage_backend="s3", storage_s3_bucket="b")
    assert private.object_cache_control is None


def test_settings_come_from_alerts_storage_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALERTS_STORAGE_BACKEND", "s3")
    monkeypatch.setenv("ALERTS_STORAGE_S3_BUCKET", "shots")
    monkeypatch.setenv("ALERTS_STORAGE_S3_ENDPOINT_URL", "https://acct.r2.cloudflarestorage.com")
    monkeypatch.setenv("ALERTS_STORAGE_S3_REGION", "auto")
    monkeypatch.setenv("ALERTS_STORAGE_PUBLIC_BASE_URL", "https://cdn.example.com")
    monkeypatch.setenv("ALERTS_STORAGE_S3_ADDRESSING_STYLE", "path")
    settings = StorageSettings(data_dir=tmp_path)
    assert (settings.storage_backend, settings.storage_s3_bucket, settings.storage_s3_region) == (
        "s3",
        "shots",
        "auto",
    )
    assert settings.storage_s3_endpoint_url == "https://acct.r2.cloudflarestorage.com"
    assert settings.storage_public_base_url == "https://cdn.example.com"
    assert settings.storage_s3_addressing_style == "path"
