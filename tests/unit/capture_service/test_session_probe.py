"""The session check's verdict on TradingView's answers: only the user's own data proves a session."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capture_service.session_probe import classify, same_site

SIGNED_IN = (
    '<html><script>window.initData = {"user": {"id": 4242, "username": "trader_1", '
    '"auth_token": "eyJhbGciOi.x.y", "is_pro": true}};</script></html>'
)
ANONYMOUS = '<html><script>window.initData = {"user": {"is_pro": false}};</script></html>'
CHALLENGE = '<html><head><title>Just a moment...</title></head><body><div id="challenge-form"></div></html>'


def test_a_page_with_the_users_data_is_a_valid_session() -> None:
    assert classify(200, SIGNED_IN) == ("valid", "signed in", "4242", "trader_1")


def test_tradingviews_page_without_user_data_is_an_invalid_session() -> None:
    verdict, detail, _, _ = classify(200, ANONYMOUS)

    assert (verdict, detail) == ("invalid", "Wrong or expired sessionid/signature")


@pytest.mark.parametrize("status", [403, 429, 500, 502, 503, 404, 301])
def test_error_statuses_prove_nothing(status: int) -> None:
    assert classify(status, SIGNED_IN)[0] == "unknown"
    assert classify(status, ANONYMOUS)[0] == "unknown"


def test_a_bot_challenge_is_neither_valid_nor_invalid() -> None:
    assert classify(200, CHALLENGE)[0] == "unknown"


def test_an_auth_token_alone_is_not_proof() -> None:
    assert classify(200, '{"auth_token": "abc"}')[0] == "invalid"


@given(st.text(max_size=2_000))
def test_no_page_without_an_auth_token_is_ever_valid(body: str) -> None:
    verdict, *_ = classify(200, body.replace("auth_token", ""))

    assert verdict in ("invalid", "unknown")


@given(st.integers(min_value=1, max_value=10**12 - 1), st.from_regex(r"[A-Za-z0-9_]{1,30}", fullmatch=True))
def test_any_signed_in_user_is_recognised(user_id: int, username: str) -> None:
    body = json.dumps({"user": {"id": user_id, "username": username, "auth_token": "t.o.k"}})

    assert classify(200, body) == ("valid", "signed in", str(user_id), username)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://www.tradingview.com/", True),
        ("https://tradingview.com/accounts/", True),
        ("https://in.tradingview.com/", True),
        ("https://tradingview.com.evil.example/", False),
        ("https://eviltradingview.com/", False),
        ("https://example.com/", False),
        ("javascript:alert(1)", False),
    ],
)
def test_redirects_stay_on_tradingviews_site(url: str, expected: bool) -> None:
    assert same_site(url, "https://www.tradingview.com") is expected


def test_an_address_as_base_matches_only_itself() -> None:
    assert same_site("http://127.0.0.1:8090/x", "http://127.0.0.1:8090")
    assert not same_site("http://127.0.0.2:8090/x", "http://127.0.0.1:8090")
