"""Standard Webhooks signatures (https://www.standardwebhooks.com): what receivers' libraries verify.

Headers ``webhook-id``, ``webhook-timestamp`` (Unix seconds) and ``webhook-signature`` =
``v1,<base64 HMAC-SHA256 over "{id}.{timestamp}.{body}">``, keyed with the secret's bytes: the base64
after the ``whsec_`` prefix.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64


def secret_bytes(secret: str) -> bytes:
    """The key inside a ``whsec_`` secret; ValueError when it is not one."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"must start with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except binascii.Error:
        raise ValueError("must be base64 after the prefix") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise ValueError(f"must hold {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes")
    return key


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, message_id, timestamp, body),
        "content-type": "application/json",
    }


def verify(
    secret: str, headers: dict[str, str], body: bytes, *, now: int, tolerance_seconds: int = 300
) -> bool:
    """What a receiver checks: a v1 signature that matches, on a timestamp within the tolerance."""
    try:
        timestamp = int(headers["webhook-timestamp"])
        expected = signature(secret, headers["webhook-id"], timestamp, body)
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_seconds:
        return False
    offered = headers.get("webhook-signature", "").split(" ")
    return any(hmac.compare_digest(candidate, expected) for candidate in offered)
