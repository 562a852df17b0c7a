"""Access tokens of users' browsers: issuing them, revoking them, and every replica learning of it.

Tokens themselves are :mod:`mesh.access_tokens`. A revocation is a per-user instant in PostgreSQL; each
replica reads the instants newer than the longest token lifetime every
``access_token_revocation_poll_seconds`` into the table its verifier consults, so a revoked token is
refused everywhere within that interval plus one query.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from mesh.access_tokens import AccessTokens, IssuedAccessToken
from mesh.errors import InvalidArgumentError, NotFoundError
from mesh.loops import BackgroundLoop
from mesh.settings import dev_secret
from signal_service.clock import utcnow
from signal_service.database import DATABASE_AWAY, REFRESH_MAX_BACKOFF_SECONDS, Database
from signal_service.ids import require_uuid
from signal_service.settings import SignalSettings
from signal_service.users.repository import UserRepository


def access_tokens_from_settings(settings: SignalSettings) -> AccessTokens:
    """ALERTS_ACCESS_TOKEN_SIGNING_KEY; in dev, when unset, a random key persisted under the data dir."""
    if settings.access_token_signing_key is not None:
        return AccessTokens(settings.access_token_signing_key.get_secret_value().encode())
    return AccessTokens(dev_secret(settings, "access_token_signing_key"))


class AccessTokenManager:
    def __init__(self, *, database: Database, settings: SignalSettings, tokens: AccessTokens) -> None:
        self._database = database
        self._settings = settings
        self.tokens = tokens
        self.refresher = BackgroundLoop(
            "access-token-revocations",
            self.refresh_revocations,
            interval_seconds=settings.access_token_revocation_poll_seconds,
            # Within the 5 s a table stays good for, so a database back soon is read again in time.
            max_backoff_seconds=REFRESH_MAX_BACKOFF_SECONDS,
            expected_errors=DATABASE_AWAY,
        )

    async def issue(self, user_id: str, ttl_seconds: int) -> IssuedAccessToken:
        maximum = self._settings.access_token_max_ttl_seconds
        if ttl_seconds < 0 or ttl_seconds > maximum:
            raise InvalidArgumentError(
                f"ttl_seconds must be between 0 (the default) and {maximum}", reason="INVALID_TTL"
            )
        parsed_id = require_uuid(user_id, "user_id")
        async with self._database.session() as session:
            if await UserRepository(session).get(parsed_id) is None:
                raise NotFoundError("no such user", reason="USER_NOT_FOUND")
        return self.tokens.issue(
            str(parsed_id),
            now=utcnow(),
            ttl_seconds=ttl_seconds or self._settings.access_token_default_ttl_seconds,
        )

    async def revoke(self, user_id: str) -> datetime:
        parsed_id = require_uuid(user_id, "user_id")
        async with self._database.transaction() as session:
            revoked_before = await UserRepository(session).revoke_access_tokens(parsed_id)
        if revoked_before is None:
            raise NotFoundError("no such user", reason="USER_NOT_FOUND")
        # This replica refuses from the answer on; the others within their poll interval.
        await self.refresh_revocations()
        return revoked_before

    async def refresh_revocations(self) -> None:
        # A margin beyond the longest lifetime covers clocks that disagree by a little.
        since = utcnow() - timedelta(seconds=self._settings.access_token_max_ttl_seconds + 60)
        async with self._database.session() as session:
            revocations = await UserRepository(session).access_token_revocations(since)
        self.tokens.revocations.replace(
            {str(user_id): instant.timestamp() for user_id, instant in revocations.items()}
        )
