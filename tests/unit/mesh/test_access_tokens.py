"""Access tokens: what they grant, what they refuse, and that nothing but a valid token verifies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.access_tokens import AccessTokens, RevocationTable
from mesh.auth import ApiKeyRing, Role, role_entry
from mesh.errors import UnauthenticatedError, UnavailableError
from mesh.roles import ROLES_BY_METHOD, may_call

SECRET = b"s" * 32
USER = "0193a6f0-0000-7000-8000-000000000001"
# Methods an access token may call: reads, and nothing else.
READS = {
    "/apidevs.alerts.v1.SignalService/GetSignal",
    "/apidevs.alerts.v1.SignalService/ListSignals",
    "/apidevs.alerts.v1.SignalService/GetUserStats",
    "/apidevs.alerts.v1.SignalService/SubscribeSignals",
    "/apidevs.alerts.v1.SignalService/ListFailedCaptures",
    "/apidevs.alerts.v1.SignalService/ListFailedNotifications",
    "/apidevs.alerts.v1.UserService/GetUser",
}


def loaded_tokens(secret: bytes = SECRET) -> AccessTokens:
    """Tokens whose revocation table has been read (empty)."""
    tokens = AccessTokens(secret)
    tokens.revocations.replace({})
    return tokens


def test_a_token_verifies_as_its_user_until_it_expires() -> None:
    tokens = loaded_tokens()
    now = datetime.now(UTC)
    issued = tokens.issue(USER, now=now, ttl_seconds=600)
    assert tokens.verify(issued.token).user_id == USER
    assert issued.expires_at == datetime.fromtimestamp(int(now.timestamp()) + 600, UTC)

    expired = tokens.issue(USER, now=now - timedelta(hours=2), ttl_seconds=600)
    with pytest.raises(UnauthenticatedError) as refused:
        tokens.verify(expired.token)
    assert refused.value.reason == "TOKEN_EXPIRED"


def test_another_key_a_tampered_payload_or_no_signature_is_refused() -> None:
    issued = AccessTokens(SECRET).issue(USER, now=datetime.now(UTC), ttl_seconds=600)
    head, _, signature = issued.token.split(".")
    forged_payload = jwt.encode({"sub": "someone-else"}, b"x" * 32, algorithm="HS256").split(".")[1]
    unsigned = jwt.encode({"sub": USER, "aud": "alerts-read"}, None, algorithm="none")
    for candidate in (
        AccessTokens(b"o" * 32).issue(USER, now=datetime.now(UTC), ttl_seconds=600).token,
        f"{head}.{forged_payload}.{signature}",
        unsigned,
    ):
        with pytest.raises(UnauthenticatedError) as refused:
            loaded_tokens().verify(candidate)
        assert refused.value.reason == "TOKEN_INVALID"
        assert candidate not in str(refused.value)


def test_a_revocation_refuses_tokens_issued_before_it_and_not_after() -> None:
    revocations = RevocationTable()
    tokens = AccessTokens(SECRET, revocations=revocations)
    revoked_at = datetime.now(UTC)
    before = tokens.issue(USER, now=revoked_at - timedelta(milliseconds=5), ttl_seconds=600)
    after = tokens.issue(USER, now=revoked_at + timedelta(milliseconds=5), ttl_seconds=600)
    revocations.replace({USER: revoked_at.timestamp()})
    with pytest.raises(UnauthenticatedError) as refused:
        tokens.verify(before.token)
    assert refused.value.reason == "TOKEN_REVOKED"
    assert tokens.verify(after.token).user_id == USER


def test_no_token_is_accepted_while_revocations_are_unknown() -> None:
    tokens = AccessTokens(SECRET, revocations=RevocationTable(max_age_seconds=0.0))
    token = tokens.issue(USER, now=datetime.now(UTC), ttl_seconds=600).token
    with pytest.raises(UnavailableError) as never_loaded:
        tokens.verify(token)
    assert never_loaded.value.reason == "TOKEN_REVOCATIONS_UNKNOWN"
    # A table older than its maximum age (here 0 s: always) is as good as unknown.
    tokens.revocations.replace({})
    with pytest.raises(UnavailableError):
        tokens.verify(token)


def test_a_short_signing_key_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        AccessTokens(b"short")


def test_the_key_ring_maps_a_token_to_a_read_only_principal_of_its_user() -> None:
    tokens = loaded_tokens()
    ring = ApiKeyRing([role_entry("k1", Role.ADMIN)], access_tokens=tokens)
    token = tokens.issue(USER, now=datetime.now(UTC), ttl_seconds=600).token
    principal = ring.authenticate(f"Bearer {token}")
    assert (principal.role, principal.user_scope) == (Role.VIEWER, USER)
    assert token not in principal.key_fingerprint
    assert ring.authenticate("Bearer k1").role is Role.ADMIN
    # A process that issues no tokens (storage, say) does not take them for keys either.
    with pytest.raises(UnauthenticatedError):
        ApiKeyRing([role_entry("k1", Role.ADMIN)]).authenticate(f"Bearer {token}")


def test_the_roles_table_lets_a_token_read_and_nothing_else() -> None:
    assert {method for method in ROLES_BY_METHOD if may_call(method, Role.VIEWER)} == READS


@given(st.text(max_size=300))
def test_no_other_text_verifies(candidate: str) -> None:
    with pytest.raises(UnauthenticatedError):
        loaded_tokens().verify(candidate)
