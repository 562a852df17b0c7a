"""Bearer API keys: configured hashed, each with one role or scoped to one user.

A configured key is ``<key>`` or ``sha256:<hex of the key>``, optionally followed by ``@role:<role>`` or
``@user:<user id>``. Without a suffix the key is the platform's. ``@user:`` restricts the caller to that
user's data, read-only (a browser-facing proxy gets such a key). What each role may call is
:mod:`mesh.roles`.

A signal service also accepts access tokens (:mod:`mesh.access_tokens`): a browser's bearer for one
user, read-only (the VIEWER role), checked without a database round trip.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import hashlib
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from pydantic import SecretStr

from mesh.access_tokens import AccessTokens, looks_like_access_token
from mesh.errors import PermissionDeniedError, UnauthenticatedError

_SCOPE_MARKER = "@user:"
_ROLE_MARKER = "@role:"


class Role(StrEnum):
    # Users, signals, outcomes, stats and streams of any user.
    PLATFORM = "platform"
    # The platform's powers plus operations: capture retry.
    ADMIN = "admin"
    # The internet-facing edge: webhooks in, edge refusal reports, health, media reads.
    EDGE = "edge"
    # Capture workers (capture and session-check claims and reports, uploads), and the signal service
    # toward storage (object URLs, retention deletes).
    WORKER = "worker"
    # A key configured with @user:<id>: reads of that one user, no writes.
    USER = "user"
    # An access token (mesh.access_tokens): reads of that one user, no writes at all.
    VIEWER = "viewer"


# Roles a configured entry may name; USER comes only with @user:<id>, which says whose; VIEWER only
# with an access token.
_NAMEABLE_ROLES = frozenset(Role) - {Role.USER, Role.VIEWER}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a key fingerprint (never the key), its role, and the user it is limited to, if any."""

    key_fingerprint: str
    role: Role = Role.PLATFORM
    user_scope: str | None = None
    # For credentials that can end while a call runs (access tokens, runtime keys): raises once it has.
    recheck: Callable[[], None] | None = field(default=None, compare=False, repr=False)

    def ensure_still_valid(self) -> None:
        """For long calls (streams), before each message: a revoked or expired credential ends them."""
        if self.recheck is not None:
            self.recheck()


principal_var: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("principal", default=None)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> str:
    return "ak_" + secrets.token_urlsafe(32)


def role_entry(key: str, role: Role) -> str:
    """The ``ALERTS_API_KEYS`` entry accepting `key` (configured hashed) in `role`."""
    return f"sha256:{hash_key(key)}{_ROLE_MARKER}{role.value}"


def parse_entry(raw: str) -> tuple[str, Principal]:
    """An ``ALERTS_API_KEYS`` entry's key digest and the principal it authenticates.

    Raises ValueError for an unknown role or an empty user id; the message never holds the key.
    """
    key, scope_marker, scope = raw.partition(_SCOPE_MARKER)
    key, role_marker, role_name = key.partition(_ROLE_MARKER)
    digest = key.removeprefix("sha256:").lower() if key.startswith("sha256:") else hash_key(key)
    fingerprint = digest[:12]
    if scope_marker and role_marker:
        raise ValueError(f"API key {fingerprint}: @role: and @user: exclude each other")
    if scope_marker:
        if not scope:
            raise ValueError(f"API key {fingerprint}: @user: needs a user id")
        return digest, Principal(key_fingerprint=fingerprint, role=Role.USER, user_scope=scope)
    if not role_marker:
        return digest, Principal(key_fingerprint=fingerprint)
    if role_name not in _NAMEABLE_ROLES:
        allowed = ", ".join(sorted(_NAMEABLE_ROLES))
        raise ValueError(f"API key {fingerprint}: unknown role {role_name!r} (one of {allowed})")
    return digest, Principal(key_fingerprint=fingerprint, role=Role(role_name))


@dataclass(frozen=True, slots=True)
class SystemKeys:
    """A key of its own role for each caller of a whole system on one machine (`alerts dev`, `demo`,
    tests, benches): the operator's (admin), the edge's and the workers'."""

    operator: str
    edge: str
    worker: str

    @classmethod
    def generate(cls, operator: str | None = None) -> SystemKeys:
        return cls(operator=operator or generate_key(), edge=generate_key(), worker=generate_key())

    def entries(self, operator_entries: Iterable[str] = ()) -> list[str]:
        """ALERTS_API_KEYS: the operator's entries as given (else admin), the edge's, the workers'."""
        operator = list(operator_entries) or [role_entry(self.operator, Role.ADMIN)]
        return [*operator, role_entry(self.edge, Role.EDGE), role_entry(self.worker, Role.WORKER)]

    def for_process(self, name: str) -> str | None:
        """The key process `name` (edge, signal, capture-<n>, notify-<n>, ...) presents: the signal
        service calls storage as a worker; storage and the stubs call nobody."""
        kind = name.split("-", 1)[0]
        return {"edge": self.edge, "signal": self.worker, "capture": self.worker, "notify": self.worker}.get(
            kind
        )


class RuntimeKeys(Protocol):
    """API keys created while the services run (the signal service's ApiKeyService), looked up in memory."""

    def principal_for(self, digest: str) -> Principal | None: ...


class ApiKeyRing:
    def __init__(
        self,
        configured: Iterable[SecretStr | str],
        *,
        access_tokens: AccessTokens | None = None,
        runtime_keys: RuntimeKeys | None = None,
    ) -> None:
        # Only the signal service, which issues access tokens and runtime keys, passes these.
        self._access_tokens = access_tokens
        self._runtime_keys = runtime_keys
        self._by_hash: dict[str, Principal] = {}
        for entry in configured:
            digest, principal = parse_entry(
                entry.get_secret_value() if isinstance(entry, SecretStr) else entry
            )
            self._by_hash[digest] = principal

    def __bool__(self) -> bool:
        return bool(self._by_hash)

    def authenticate(self, authorization: str | None) -> Principal:
        if not authorization or not authorization.lower().startswith("bearer "):
            raise UnauthenticatedError("missing bearer API key")
        credential = authorization[7:].strip()
        if self._access_tokens is not None and looks_like_access_token(credential):
            token = self._access_tokens.verify(credential)
            return Principal(
                key_fingerprint=f"token:{token.token_id[:12]}",
                role=Role.VIEWER,
                user_scope=token.user_id,
                recheck=functools.partial(self._access_tokens.ensure_still_valid, token),
            )
        digest = hash_key(credential)
        principal = self._by_hash.get(digest)
        if principal is None and self._runtime_keys is not None:
            principal = self._runtime_keys.principal_for(digest)
            if principal is not None:
                principal = dataclasses.replace(
                    principal, recheck=functools.partial(self._ensure_runtime_key, digest)
                )
        if principal is None:
            raise UnauthenticatedError("invalid API key")
        return principal

    def _ensure_runtime_key(self, digest: str) -> None:
        if self._runtime_keys is None or self._runtime_keys.principal_for(digest) is None:
            raise UnauthenticatedError("API key revoked", reason="API_KEY_REVOKED")


def current_principal() -> Principal:
    principal = principal_var.get()
    if principal is None:
        raise UnauthenticatedError("no authenticated caller")
    return principal


def ensure_unscoped() -> None:
    """For internal and administrative calls, which a user-scoped key may not make."""
    if current_principal().user_scope is not None:
        raise PermissionDeniedError("this API key is limited to one user", reason="USER_SCOPE")
