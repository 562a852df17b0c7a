"""API keys created at runtime: issued once, stored hashed, revoked on every replica within seconds.

Keys configured in ALERTS_API_KEYS stay the bootstrap: they work without the database and are never
listed here. Each replica reloads the accepted runtime keys every ``api_key_refresh_seconds`` into the
in-memory table its interceptor consults (:class:`RuntimeKeyTable`), so authenticating a call never
queries the database, and a revocation reaches every replica within that interval plus one query.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Mapping, Sequence

from sqlalchemy.exc import IntegrityError

from mesh.auth import Principal, Role, generate_key, hash_key
from mesh.errors import InvalidArgumentError, NotFoundError, UnavailableError
from mesh.loops import BackgroundLoop
from signal_service.api_keys.repository import ApiKeyRepository
from signal_service.database import DATABASE_AWAY, REFRESH_MAX_BACKOFF_SECONDS, Database
from signal_service.ids import require_uuid
from signal_service.models import ApiKey
from signal_service.users.repository import UserRepository

MAX_NAME_LENGTH = 200
# Roles a runtime key may hold; access tokens are VIEWERs, never keys.
CREATABLE_ROLES = frozenset(Role) - {Role.VIEWER}


class RuntimeKeyTable:
    """Key digest -> principal, replaced whole by each reload; implements mesh.auth.RuntimeKeys.

    Fails closed: until its first load, and when its last load is older than `max_age_seconds` (the
    database is away), no runtime key is accepted, since a revocation made meanwhile would go unseen.
    Bootstrap keys are not affected.
    """

    def __init__(self, *, max_age_seconds: float = 5.0) -> None:
        self._by_hash: Mapping[str, Principal] = {}
        self._max_age = max_age_seconds
        self._loaded_at = -math.inf

    def principal_for(self, digest: str) -> Principal | None:
        principal = self._by_hash.get(digest)
        if principal is not None and time.monotonic() - self._loaded_at > self._max_age:
            raise UnavailableError("runtime API keys are not known yet; retry", reason="API_KEYS_UNKNOWN")
        return principal

    def replace(self, by_hash: Mapping[str, Principal]) -> None:
        self._by_hash = dict(by_hash)
        self._loaded_at = time.monotonic()


def _principal(key_hash: str, role: str, user_id: uuid.UUID | None) -> Principal:
    return Principal(
        key_fingerprint=key_hash[:12], role=Role(role), user_scope=str(user_id) if user_id else None
    )


class ApiKeyManager:
    def __init__(self, *, database: Database, refresh_seconds: float) -> None:
        self._database = database
        self.table = RuntimeKeyTable()
        self.refresher = BackgroundLoop(
            "runtime-api-keys",
            self.reload,
            interval_seconds=refresh_seconds,
            max_backoff_seconds=REFRESH_MAX_BACKOFF_SECONDS,
            expected_errors=DATABASE_AWAY,
        )

    async def create(self, *, role: Role, name: str, user_id: str) -> tuple[ApiKey, str]:
        """The stored key and the key itself, which is never stored nor shown again."""
        if role not in CREATABLE_ROLES:
            raise InvalidArgumentError(f"a key cannot have the {role.value} role", reason="INVALID_ROLE")
        name = name.strip()
        if not name or len(name) > MAX_NAME_LENGTH:
            raise InvalidArgumentError(
                f"name is required, at most {MAX_NAME_LENGTH} characters", reason="INVALID_NAME"
            )
        if (role is Role.USER) != bool(user_id):
            raise InvalidArgumentError(
                "user_id is required for a user key and refused for any other", reason="INVALID_USER_ID"
            )
        parsed_user = require_uuid(user_id, "user_id") if user_id else None
        key = generate_key()
        # Columns with a server default (created_at, ...) are left to PostgreSQL.
        row = ApiKey(id=uuid.uuid4(), key_hash=hash_key(key), name=name, role=role.value, user_id=parsed_user)  # type: ignore[call-arg]
        try:
            async with self._database.transaction() as session:
                if parsed_user is not None and await UserRepository(session).get(parsed_user) is None:
                    raise NotFoundError("no such user", reason="USER_NOT_FOUND")
                stored = await ApiKeyRepository(session).add(row)
        except IntegrityError as exc:
            # A concurrent deletion of the user; a clash of 256-bit random keys does not happen.
            raise NotFoundError("no such user", reason="USER_NOT_FOUND") from exc
        await self.reload()
        return stored, key

    async def list(self, *, include_revoked: bool) -> Sequence[ApiKey]:
        async with self._database.session() as session:
            return await ApiKeyRepository(session).list(include_revoked=include_revoked)

    async def revoke(self, key_id: str) -> ApiKey:
        parsed = require_uuid(key_id, "key_id")
        async with self._database.transaction() as session:
            revoked = await ApiKeyRepository(session).revoke(parsed)
        if revoked is None:
            raise NotFoundError("no such API key", reason="API_KEY_NOT_FOUND")
        # This replica refuses the key from the answer on; the others within their refresh interval.
        await self.reload()
        return revoked

    async def reload(self) -> None:
        async with self._database.session() as session:
            accepted = await ApiKeyRepository(session).accepted()
        self.table.replace({key_hash: _principal(key_hash, role, user) for key_hash, role, user in accepted})
