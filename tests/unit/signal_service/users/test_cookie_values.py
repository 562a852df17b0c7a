"""Cookie values SetTradingViewSession accepts: RFC 6265 cookie-octets, 1 to 4096 of them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.errors import InvalidArgumentError
from signal_service.users.cookies import MAX_COOKIE_VALUE_CHARS, require_cookie_value

_FORBIDDEN = [chr(code) for code in range(0x20)] + [" ", '"', ",", ";", "\\", "\x7f", "é", "\u2028"]
_OCTETS = st.sampled_from([chr(code) for code in range(0x21, 0x7F) if chr(code) not in {'"', ",", ";", "\\"}])


@given(st.text(_OCTETS, min_size=1, max_size=MAX_COOKIE_VALUE_CHARS))
def test_every_cookie_octet_string_is_accepted(value: str) -> None:
    assert require_cookie_value("sessionid", value) == value


@given(
    st.text(_OCTETS, max_size=50),
    st.sampled_from(_FORBIDDEN),
    st.text(_OCTETS, max_size=50),
)
def test_any_other_character_is_refused_naming_the_field_not_the_value(
    before: str, bad: str, after: str
) -> None:
    value = f"s3cr3t{before}{bad}{after}"
    with pytest.raises(InvalidArgumentError) as caught:
        require_cookie_value("sessionid_sign", value)
    assert caught.value.reason == "INVALID_TRADINGVIEW_SESSION"
    assert caught.value.metadata == {"field": "sessionid_sign"}
    assert "sessionid_sign" in caught.value.message
    assert "s3cr3t" not in caught.value.message


@pytest.mark.parametrize("value", ["", "a" * (MAX_COOKIE_VALUE_CHARS + 1)])
def test_empty_and_overlong_values_are_refused(value: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        require_cookie_value("sessionid", value)
    assert caught.value.metadata == {"field": "sessionid"}
