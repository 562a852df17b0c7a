"""TradingView cookie values as SetTradingViewSession accepts them: what a browser would send back.

RFC 6265 (4.1.1) cookie-octets only: no control characters, whitespace, DQUOTE, comma, semicolon or
backslash. Chromium drops a cookie with any of those, and every capture would then fail as logged out
after its retries; refusing the value at once tells the caller what is wrong.
"""

from __future__ import annotations

import re

from mesh.errors import InvalidArgumentError

MAX_COOKIE_VALUE_CHARS = 4096
_COOKIE_OCTETS = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]+")


def require_cookie_value(field: str, value: str) -> str:
    """`value` when it is a valid cookie value; else INVALID_ARGUMENT naming `field`, never the value."""
    if not value:
        raise InvalidArgumentError(
            f"{field} is required", reason="INVALID_TRADINGVIEW_SESSION", metadata={"field": field}
        )
    if len(value) > MAX_COOKIE_VALUE_CHARS:
        raise InvalidArgumentError(
            f"{field} is longer than {MAX_COOKIE_VALUE_CHARS} characters",
            reason="INVALID_TRADINGVIEW_SESSION",
            metadata={"field": field},
        )
    if _COOKIE_OCTETS.fullmatch(value) is None:
        raise InvalidArgumentError(
            f"{field} is not a valid cookie value: printable ASCII only, without whitespace, double "
            "quotes, commas, semicolons or backslashes",
            reason="INVALID_TRADINGVIEW_SESSION",
            metadata={"field": field},
        )
    return value
