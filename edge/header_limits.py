"""Header count and size limits on every route: 431 before any handler work.

The webhook route applies the same limits itself, so that its refusal is audited like every webhook call
(it opts out of this middleware with WEBHOOK_AUDITS_HEADERS). Heads too large to parse at all are refused
earlier by the HTTP protocol (edge/http_protocol.py).
"""

from __future__ import annotations

from collections.abc import Iterable

from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.response.base import ASGIResponse
from litestar.types import ASGIApp, Receive, Scope, Send

from edge.settings import EdgeSettings

# A route handler opt: the route checks header limits itself.
WEBHOOK_AUDITS_HEADERS = "audits_header_limits"


def headers_too_large(headers: Iterable[tuple[bytes, bytes]], settings: EdgeSettings) -> bool:
    count = 0
    size = 0
    for name, value in headers:
        count += 1
        size += len(name) + len(value)
    return over_header_limits(count, size, settings)


def over_header_limits(count: int, size: int, settings: EdgeSettings) -> bool:
    """`count` headers of `size` bytes (names and values) in all: more than any route takes?"""
    return count > settings.max_header_count or size > settings.max_header_bytes


class HeaderLimitMiddleware(ASGIMiddleware):
    scopes = (ScopeType.HTTP,)
    exclude_opt_key = WEBHOOK_AUDITS_HEADERS

    def __init__(self, settings: EdgeSettings) -> None:
        self._settings = settings

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        if headers_too_large(scope["headers"], self._settings):
            response = ASGIResponse(
                body=b'{"success":false,"error":"headers_too_large"}',
                media_type="application/json",
                status_code=431,
                headers={"Connection": "close", "Cache-Control": "no-store"},
            )
            await response(scope, receive, send)
            return
        await next_app(scope, receive, send)
