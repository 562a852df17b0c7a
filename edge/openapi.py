"""What the edge's OpenAPI document (/schema) says that Litestar cannot infer from a handler's signature:
the headers error answers carry, and the bodies the webhook and /media handlers read and write as raw
streams. Every route but /health's names an operation class from here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar.openapi.spec import (
    OpenAPIFormat,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    RequestBody,
    Schema,
)

_ALERT_DESCRIPTION = (
    "The alert message exactly as TradingView sends it, at most 64 KiB: the standard APIDevs lines, a JSON "
    "object with the same fields, or any other text, under any content type. A message that cannot be "
    "fully parsed is stored with its raw text and a parse status, never dropped."
)
_TEXT = Schema(type=OpenAPIType.STRING)
# The JSON fields the parser reads; every other key is kept with the signal.
_ALERT_JSON = Schema(
    type=OpenAPIType.OBJECT,
    properties={
        "ticker": _TEXT,
        "price": Schema(one_of=[Schema(type=OpenAPIType.NUMBER), _TEXT]),
        "indicator": _TEXT,
        "signal": _TEXT,
        "signal_type": _TEXT,
        "interval": _TEXT,
        "time": _TEXT,
    },
    additional_properties=True,
)


_RETRY_AFTER = OpenAPIHeader(
    schema=Schema(type=OpenAPIType.INTEGER, minimum=0),
    description="Seconds to wait before trying again, when the edge knows",
)
# edge.errors.refusal_response names the scheme on every 401.
_WWW_AUTHENTICATE = OpenAPIHeader(schema=Schema(type=OpenAPIType.STRING), required=True)


@dataclass
class EdgeOperation(Operation):
    """Declares the headers edge.errors puts on error answers (not for /health, whose 503 is its report)."""

    def __post_init__(self) -> None:
        for status, response in (self.responses or {}).items():
            if not isinstance(response, OpenAPIResponse):
                continue
            if status in ("429", "503"):
                response.headers = {**(response.headers or {}), "Retry-After": _RETRY_AFTER}
            if status == "401":
                response.headers = {**(response.headers or {}), "WWW-Authenticate": _WWW_AUTHENTICATE}


@dataclass
class WebhookOperation(EdgeOperation):
    """The webhook reads its body as a stream (to bound and time it), so the body is declared here."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.request_body = RequestBody(
            description=_ALERT_DESCRIPTION,
            content={
                # Bytes, as TradingView's text may be in any encoding and is stored as received.
                "text/plain": OpenAPIMediaType(
                    schema=Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)
                ),
                "application/json": OpenAPIMediaType(schema=_ALERT_JSON),
            },
        )


@dataclass
class MediaOperation(EdgeOperation):
    """/media streams the stored object: a PNG, as screenshots are the only objects the system stores."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.responses is not None:
            self.responses["200"] = OpenAPIResponse(
                description="The object, streamed; Cache-Control lasts until the link expires",
                content={
                    "image/png": OpenAPIMediaType(
                        schema=Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)
                    )
                },
            )


def absent_or(schema_type: OpenAPIType, **schema: Any) -> dict[str, Any]:
    """``schema_extra`` for an optional parameter: absent or a value. Litestar declares ``X | None`` as
    nullable, which a query string or header cannot carry and which generated clients then offer."""
    return {"one_of": None, "type": schema_type, **schema}
