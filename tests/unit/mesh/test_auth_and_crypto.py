from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.auth import ApiKeyRing
from mesh.crypto import CookieCipher, CookieCipherError
from mesh.errors import UnauthenticatedError
from mesh.settings import CommonSettings


def test_plain_hashed_and_scoped_keys() -> None:
    ring = ApiKeyRing(["plain", f"sha256:{hashlib.sha256(b'hashed').hexdigest()}", "scoped@user:u-1"])
    assert ring.authenticate("Bearer plain").user_scope is None
    assert ring.authenticate("bearer hashed").user_scope is None
    scoped = ring.authenticate("Bearer scoped")
    assert scoped.user_scope == "u-1"
    for header in (None, "", "plain", "Bearer", "Bearer nope", "Basic plain"):
        with pytest.raises(UnauthenticatedError):
            ring.authenticate(header)


@given(st.binary(max_size=2048))
def test_cipher_round_trips_and_rotates(plaintext: bytes) -> None:
    old = CookieCipher([("old", b"o" * 32)])
    rotated = CookieCipher([("new", b"n" * 32), ("old", b"o" * 32)])
    sealed = old.encrypt(plaintext)
    assert rotated.decrypt(sealed) == plaintext
    assert rotated.needs_reencryption(sealed)
    resealed = rotated.encrypt(plaintext)
    assert rotated.key_id_of(resealed) == "new"
    with pytest.raises(CookieCipherError):
        old.decrypt(resealed)


def test_tampered_ciphertext_is_refused() -> None:
    cipher = CookieCipher([("k", b"k" * 32)])
    plaintext = b'{"sessionid": "recognisable-session-value"}'
    sealed = bytearray(cipher.encrypt(plaintext))
    assert b"recognisable-session-value" not in sealed
    sealed[-1] ^= 1
    with pytest.raises(CookieCipherError):
        cipher.decrypt(bytes(sealed))


def test_keys_from_settings() -> None:
    key = base64.b64encode(b"z" * 32).decode()
    cipher = CookieCipher.from_settings(CommonSettings(cookie_keys=f"k2:{key}"))
    assert cipher.primary_key_id == "k2"


def test_each_process_requires_only_its_own_secrets_in_production() -> None:
    from capture_service.settings import CaptureSettings
    from edge.settings import EdgeSettings
    from signal_service.settings import DatabaseJobSettings, SignalSettings
    from storage_service.settings import StorageSettings

    everything = {
        "database_url": "postgresql+asyncpg://db/alerts",
        "redis_url": "redis://redis",
        "api_keys": "k",
        "service_api_key": "k",
        "cookie_keys": f"k1:{base64.b64encode(b'c' * 32).decode()}",
        "media_signing_key": "m",
        "access_token_signing_key": "a" * 32,
    }
    expected = {
        EdgeSettings: {"service_api_key", "media_signing_key"},
        StorageSettings: {"api_keys", "media_signing_key"},
        SignalSettings: {
            "database_url",
            "redis_url",
            "api_keys",
            "service_api_key",
            "cookie_keys",
            "access_token_signing_key",
        },
        CaptureSettings: {"redis_url", "service_api_key", "cookie_keys"},
        DatabaseJobSettings: {"database_url"},
    }
    for cls, required in expected.items():
        cls(env="production", **{name: everything[name] for name in required})
        for name in required:
            others = {key: everything[key] for key in required - {name}}
            with pytest.raises(ValueError, match=f"ALERTS_{name.upper()}"):
                cls(env="production", **others)
    assert "cookie_keys" not in EdgeSettings.required_in_production
    # Only the signal service issues and verifies access tokens: the edge forwards a bearer untouched.
    assert "access_token_signing_key" not in EdgeSettings.model_fields
