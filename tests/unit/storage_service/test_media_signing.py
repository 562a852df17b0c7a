import time
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from edge.settings import EdgeSettings
from mesh.settings import CommonSettings
from mesh.signing import (
    MediaSignatureError,
    media_signature,
    media_signing_secret,
    signed_media_url,
    verify_media_signature,
)
from storage_service.settings import StorageSettings

SECRET = b"s" * 32


def _parts(url: str) -> tuple[str, str, str]:
    split = urlsplit(url)
    query = parse_qs(split.query)
    return unquote(split.path.removeprefix("/media/")), query["expires"][0], query["sig"][0]


def test_signed_url_round_trips() -> None:
    expires = int(time.time()) + 60
    url = signed_media_url("https://alerts.example.com/", "shots/u 1/é?.png", expires, SECRET)
    assert url.startswith("https://alerts.example.com/media/shots/u%201/")
    key, expires_text, signature = _parts(url)
    assert key == "shots/u 1/é?.png"
    assert verify_media_signature(key, expires_text, signature, SECRET) == expires


def test_expired_url_is_refused_as_expired() -> None:
    expires = int(time.time()) - 1
    signature = media_signature("a.png", expires, SECRET)
    with pytest.raises(MediaSignatureError) as raised:
        verify_media_signature("a.png", str(expires), signature, SECRET)
    assert raised.value.reason == "expired"


@pytest.mark.parametrize(
    ("key", "expires_delta", "signature_secret"),
    [
        ("b.png", 0, SECRET),  # another key
        ("a.png", 3600, SECRET),  # a later expiry
        ("a.png", 0, b"another secret"),
    ],
)
def test_tampered_url_is_refused_as_invalid(key: str, expires_delta: int, signature_secret: bytes) -> None:
    expires = int(time.time()) + 60
    signature = media_signature("a.png", expires, signature_secret)
    with pytest.raises(MediaSignatureError) as raised:
        verify_media_signature(key, str(expires + expires_delta), signature, SECRET)
    assert raised.value.reason == "invalid"


@given(
    expires=st.one_of(st.none(), st.text(max_size=20)), signature=st.one_of(st.none(), st.text(max_size=70))
)
def test_arbitrary_query_values_never_verify(expires: str | None, signature: str | None) -> None:
    with pytest.raises(MediaSignatureError):
        verify_media_signature("a.png", expires, signature, SECRET)


def test_configured_secret_wins(tmp_path: Path) -> None:
    settings = CommonSettings(data_dir=tmp_path, media_signing_key=SecretStr("configured"))
    assert media_signing_secret(settings) == b"configured"


def test_dev_secret_is_generated_once_and_shared(tmp_path: Path) -> None:
    first = media_signing_secret(CommonSettings(data_dir=tmp_path))
    second = media_signing_secret(CommonSettings(data_dir=tmp_path))
    assert first == second
    assert len(first) == 32


@pytest.mark.parametrize("settings_class", [StorageSettings, EdgeSettings])
def test_production_requires_a_configured_secret(tmp_path: Path, settings_class: type) -> None:
    """The processes that sign or verify media links refuse to start without the signing key."""
    with pytest.raises(ValueError, match="ALERTS_MEDIA_SIGNING_KEY"):
        settings_class(env="production", data_dir=tmp_path, api_keys="k", service_api_key=SecretStr("k"))
