"""Webhook tokens: 256 random bits, URL-safe, recognisable; only their SHA-256 is stored."""

from __future__ import annotations

import hashlib
import re
import secrets

_PREFIX = "whk_"
_SHAPE = re.compile(r"whk_[A-Za-z0-9_-]{43}")


def generate_token() -> str:
    return _PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def looks_like_token(candidate: str) -> bool:
    """Shape check done before any database work, so garbage never costs a query."""
    return _SHAPE.fullmatch(candidate) is not None
