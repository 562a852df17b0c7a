"""Access tokens for browsers: signed, short-lived, read-only, for one user.

A token is a JWT (HS256, PyJWT) carrying the user id (``sub``), when it was issued (``iat``, with
millisecond precision, so a revocation splits tokens issued in the same second) and when it expires
(``exp``). The signal service both issues and verifies them, so one secret that never leaves it suffices;
the edge forwards a caller's bearer untouched and needs no key. Verification is the signature and the
expiry only; revocation is a per-user "not before" the signal service keeps in memory
(:class:`RevocationTable`), refreshed from PostgreSQL every second on every replica.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import jwt

from mesh.errors import UnauthenticatedError, UnavailableError

_ALGORITHM = "HS256"
_AUDIENCE = "alerts-read"
_TYPE = "at+jwt"
# A JWT is three base64url parts, the first a JSON header ('{"' encodes as "eyJ"); an API key holds no dot.
_JWT_HEADER_START = "eyJ"


def looks_like_access_token(credential: str) -> bool:
    return credential.startswith(_JWT_HEADER_START) and credential.count(".") == 2


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    user_id: str
    issued_at: float
    expires_at: float
    token_id: str


@dataclass(frozen=True, slots=True)
class IssuedAccessToken:
    token: str
    expires_at: datetime


class RevocationTable:
    """Per user, the instant before which every token is refused; replaced whole by its refresher.

    Fails closed: until its first load, and when its last load is older than `max_age_seconds` (the
    database is away), no token is accepted, since a revocation made meanwhile would go unseen.
    """

    def __init__(self, *, max_age_seconds: float = 5.0) -> None:
        self._not_before: Mapping[str, float] = {}
        self._max_age = max_age_seconds
        self._loaded_at = -math.inf

    def replace(self, not_before: Mapping[str, float]) -> None:
        self._not_before = dict(not_before)
        self._loaded_at = time.monotonic()

    def revoked(self, token: VerifiedToken) -> bool:
        if time.monotonic() - self._loaded_at > self._max_age:
            raise UnavailableError(
                "access token revocations are not known yet; retry", reason="TOKEN_REVOCATIONS_UNKNOWN"
            )
        return token.issued_at < self._not_before.get(token.user_id, -math.inf)


class AccessTokens:
    def __init__(self, secret: bytes, *, revocations: RevocationTable | None = None) -> None:
        if len(secret) < 32:
            raise ValueError("the access token signing key needs at least 32 bytes")
        self._secret = secret
        self.revocations = revocations or RevocationTable()

    def issue(self, user_id: str, *, now: datetime, ttl_seconds: int) -> IssuedAccessToken:
        issued_at = round(now.timestamp(), 3)
        expires = math.floor(issued_at) + ttl_seconds
        claims = {
            "sub": user_id,
            "aud": _AUDIENCE,
            "iat": issued_at,
            "exp": expires,
            "jti": uuid.uuid4().hex,
        }
        token = jwt.encode(claims, self._secret, algorithm=_ALGORITHM, headers={"typ": _TYPE})
        return IssuedAccessToken(token=token, expires_at=datetime.fromtimestamp(expires, UTC))

    def verify(self, token: str) -> VerifiedToken:
        """The token's claims when its signature, audience and expiry hold and it is not revoked.

        Raises UnauthenticatedError saying only expired or invalid: the reason never echoes the token.
        """
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[_ALGORITHM],
                audience=_AUDIENCE,
                options={"require": ["sub", "iat", "exp", "jti"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise UnauthenticatedError("access token expired", reason="TOKEN_EXPIRED") from exc
        except jwt.InvalidTokenError as exc:
            raise UnauthenticatedError("invalid access token", reason="TOKEN_INVALID") from exc
        verified = VerifiedToken(
            user_id=str(claims["sub"]),
            issued_at=float(claims["iat"]),
            expires_at=float(claims["exp"]),
            token_id=str(claims["jti"]),
        )
        self.ensure_still_valid(verified)
        return verified

    def ensure_still_valid(self, token: VerifiedToken) -> None:
        """For a long call (a stream) made with `token`: refuses it once it has expired or been revoked."""
        if time.time() >= token.expires_at:
            raise UnauthenticatedError("access token expired", reason="TOKEN_EXPIRED")
        if self.revocations.revoked(token):
            raise UnauthenticatedError("access token revoked", reason="TOKEN_REVOKED")
