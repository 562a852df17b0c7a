"""Bearer API keys: configured hashed, optionally scoped to one user.

A configured key is ``<key>`` or ``sha256:<hex of the key>``, optionally followed by ``@user:<user id>``,
which restricts the caller to that user's data (a browser-facing proxy gets such a key).
"""

from __future__ import annotations

import contextvars
import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import SecretStr

from mesh.errors import PermissionDeniedError, UnauthenticatedError

_SCOPE_MARKER = "@user:"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a key fingerprint (never the key) and the user it is limited to, if any."""

    key_fingerprint: str
    user_scope: str | None = None


principal_var: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("principal", default=None)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> str:
    return "ak_" + secrets.token_urlsafe(32)


class ApiKeyRing:
    def __init__(self, configured: Iterable[SecretStr | str]) -> None:
        self._by_hash: dict[str, Principal] = {}
        for entry in configured:
            raw = entry.get_secret_value() if isinstance(entry, SecretStr) else entry
            key, _, scope = raw.partition(_SCOPE_MARKER)
            digest = key.removeprefix("sha256:").lower() if key.startswith("sha256:") else hash_key(key)
            self._by_hash[digest] = Principal(key_fingerprint=digest[:12], user_scope=scope or None)

    def __bool__(self) -> bool:
        return bool(self._by_hash)

    def authenticate(self, authorization: str | None) -> Principal:
        if not authorization or not authorization.lower().startswith("bearer "):
            raise UnauthenticatedError("missing bearer API key")
        principal = self._by_hash.get(hash_key(authorization[7:].strip()))
        if principal is None:
            raise UnauthenticatedError("invalid API key")
        return principal


def current_principal() -> Principal:
    principal = principal_var.get()
    if principal is None:
        raise UnauthenticatedError("no authenticated caller")
    return principal


def ensure_unscoped() -> None:
    """For internal and administrative calls, which a user-scoped key may not make."""
    if current_principal().user_scope is not None:
        raise PermissionDeniedError("this API key is limited to one user", reason="USER_SCOPE")
