"""Signed, expiring media URLs: storage_service issues them, the edge verifies them.

A URL is ``{public_url}/media/{key}?expires=<unix seconds>&sig=<hex HMAC-SHA256>``; the MAC covers a
version tag, the key and the expiry, so changing any of them, or signing with another secret, fails.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from urllib.parse import quote

from mesh.settings import CommonSettings, dev_secret

_SIGNED_MESSAGE_VERSION = b"alerts-media-v1"
_EXPIRES_PATTERN = re.compile(r"[0-9]{1,12}")
_SIGNATURE_PATTERN = re.compile(r"[0-9a-f]{64}")


class MediaSignatureError(Exception):
    """A media URL that must be refused; ``reason`` is "expired" or "invalid"."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"media URL {reason}")
        self.reason = reason


def media_signing_secret(settings: CommonSettings) -> bytes:
    """ALERTS_MEDIA_SIGNING_KEY; in dev, when unset, a random secret persisted under the data dir."""
    if settings.media_signing_key is not None:
        return settings.media_signing_key.get_secret_value().encode()
    return dev_secret(settings, "media_signing_key")


def media_signature(key: str, expires: int, secret: bytes) -> str:
    message = b"\n".join((_SIGNED_MESSAGE_VERSION, key.encode(), str(expires).encode()))
    # One C call, not an HMAC object per URL: a replay page signs a thousand.
    return hmac.digest(secret, message, hashlib.sha256).hex()


def signed_media_url(base_url: str, key: str, expires: int, secret: bytes) -> str:
    # Digits and lowercase hex: nothing in the query needs escaping (what urlencode would give, unescaped).
    query = f"expires={expires}&sig={media_signature(key, expires, secret)}"
    return f"{base_url.rstrip('/')}/media/{quote(key, safe='/')}?{query}"


def verify_media_signature(
    key: str, expires: str | None, signature: str | None, secret: bytes, *, now: float | None = None
) -> int:
    """Returns the expiry (unix seconds) of a valid, unexpired URL; raises MediaSignatureError otherwise.

    The signature is checked before the expiry so that an expired URL is only reported as expired when
    it was genuine.
    """
    if not expires or not signature or not _EXPIRES_PATTERN.fullmatch(expires):
        raise MediaSignatureError("invalid")
    if not _SIGNATURE_PATTERN.fullmatch(signature.lower()):
        raise MediaSignatureError("invalid")
    expires_at = int(expires)
    if not hmac.compare_digest(media_signature(key, expires_at, secret), signature.lower()):
        raise MediaSignatureError("invalid")
    if expires_at <= (time.time() if now is None else now):
        raise MediaSignatureError("expired")
    return expires_at
