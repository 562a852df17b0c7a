"""Standard Webhooks signatures, checked against the specification's published test vector."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from notify_service.signing import secret_bytes, signature, signed_headers, verify

SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_the_specifications_test_vector() -> None:
    assert (
        signature(SPEC_SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


@pytest.mark.parametrize(
    "secret",
    ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not base64!", "whsec_" + base64.b64encode(b"x" * 8).decode()],
)
def test_secrets_that_are_not_whsec_keys_are_refused(secret: str) -> None:
    with pytest.raises(ValueError, match="must"):
        secret_bytes(secret)


@given(st.binary(max_size=2_000), st.integers(min_value=0, max_value=2**40))
def test_a_receiver_accepts_what_was_signed_and_nothing_else(body: bytes, timestamp: int) -> None:
    headers = signed_headers(SPEC_SECRET, "msg_1", timestamp, body)

    assert verify(SPEC_SECRET, headers, body, now=timestamp)
    assert not verify(SPEC_SECRET, headers, body + b"x", now=timestamp)
    assert not verify(SPEC_SECRET, {**headers, "webhook-id": "msg_2"}, body, now=timestamp)
    assert not verify(SPEC_SECRET, headers, body, now=timestamp + 301)
