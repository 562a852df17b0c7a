"""X-Forwarded-Client-Cert as Envoy writes it, and the TradingView subject match."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.client_certificate import (
    forwarded_subject,
    is_tradingview_subject,
    tradingview_certificate_verified,
)

TRADINGVIEW_SUBJECT = r"CN=TradingView Webhooks,O=TradingView\, Inc.,L=Westerville,ST=Ohio,C=US"


def envoy_header(subject: str) -> str:
    """The header Envoy's SANITIZE_SET writes with set_current_client_cert_details {subject: true}."""
    return f'Hash=3f1c0b1e2a;Subject="{subject}"'


def test_the_tradingview_certificate_is_recognised() -> None:
    assert forwarded_subject(envoy_header(TRADINGVIEW_SUBJECT)) == TRADINGVIEW_SUBJECT
    assert tradingview_certificate_verified([envoy_header(TRADINGVIEW_SUBJECT)])


@pytest.mark.parametrize(
    "subject",
    [
        r"CN=TradingView Webhooks,O=Evil\, Inc.",
        r"CN=TradingView Webhooks",
        r"O=TradingView\, Inc.",
        r"CN=TradingView Webhooks x,O=TradingView\, Inc.",
        # O=TradingView plus a separate attribute " Inc.": the escaped comma matters.
        r"CN=TradingView Webhooks,O=TradingView, Inc.",
        r"CN=TradingView Webhooks,CN=Other,O=TradingView\, Inc.",
        "not a distinguished name",
    ],
)
def test_other_subjects_are_not_tradingview(subject: str) -> None:
    assert not is_tradingview_subject(subject)
    assert not tradingview_certificate_verified([envoy_header(subject)])


@pytest.mark.parametrize(
    "lines",
    [
        [],
        # Two proxies' elements in one header, or two header lines: not what Envoy's SANITIZE_SET sends.
        [envoy_header(TRADINGVIEW_SUBJECT) + "," + envoy_header(TRADINGVIEW_SUBJECT)],
        [envoy_header(TRADINGVIEW_SUBJECT), envoy_header(TRADINGVIEW_SUBJECT)],
        [f'Hash=1;Subject="{TRADINGVIEW_SUBJECT}";Subject="CN=x"'],
        [f'Hash=1;Subject="{TRADINGVIEW_SUBJECT}'],
        ["Hash=1"],
        ["garbage"],
    ],
)
def test_headers_that_are_not_one_verified_element_prove_nothing(lines: list[str]) -> None:
    assert not tradingview_certificate_verified(lines)


def test_an_escaped_quote_stays_inside_the_subject() -> None:
    subject = r"CN=a\"b,O=c"
    assert forwarded_subject(envoy_header(subject)) == subject


@given(st.text(max_size=300))
def test_no_other_header_passes_and_none_raises(header: str) -> None:
    """Whatever reaches the edge in that header is judged, never an exception."""
    verified = tradingview_certificate_verified([header])
    assert verified is ("TradingView Webhooks" in header and r"TradingView\, Inc." in header) or not verified


@given(st.text(alphabet=st.characters(exclude_characters='"\\'), min_size=1, max_size=40))
def test_an_extra_attribute_value_breaks_the_match(extra: str) -> None:
    assert not tradingview_certificate_verified(
        [envoy_header(f"CN=TradingView Webhooks{extra},O=TradingView\\, Inc.")]
    )
