"""The edge's one table from errors to HTTP answers, registered once on the app, and its OpenAPI side.

Every non-2xx answer has one shape, ``{"success": false, "error": "<code>", "message"?: "<what to fix>"}``
(ErrorOut): domain errors (raised by handlers, or carried back over gRPC) through the table below,
Litestar's own refusals (unknown route, wrong method, unparsable parameter) by their status, and anything
unexpected as a logged 500. Routes declare the statuses they can answer with ``error_responses``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, TypedDict

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.types import ExceptionHandlersMap

from mesh.errors import AlertsError, retry_after_header

log = logging.getLogger(__name__)

# (gRPC status name, ErrorInfo reason or "" for any) -> (HTTP status, error code in the JSON body)
_HTTP_BY_ERROR: dict[tuple[str, str], tuple[int, str]] = {
    ("NOT_FOUND", ""): (404, "not_found"),
    ("PERMISSION_DENIED", "IP_NOT_ALLOWED"): (403, "ip_not_allowed"),
    ("PERMISSION_DENIED", "WEBHOOK_DISABLED"): (403, "webhook_disabled"),
    ("PERMISSION_DENIED", "CLIENT_CERTIFICATE_REQUIRED"): (403, "client_certificate_required"),
    ("PERMISSION_DENIED", "MEDIA_LINK_EXPIRED"): (403, "link_expired"),
    ("PERMISSION_DENIED", "MEDIA_LINK_INVALID"): (403, "link_invalid"),
    ("PERMISSION_DENIED", ""): (403, "forbidden"),
    ("RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"): (429, "quota_exceeded"),
    ("RESOURCE_EXHAUSTED", "RATE_LIMITED"): (429, "rate_limited"),
    ("RESOURCE_EXHAUSTED", "TOO_MANY_STREAMS"): (429, "too_many_streams"),
    # gRPC's own message size limit: the answer could not be carried, which no retry by the caller fixes.
    ("RESOURCE_EXHAUSTED", "MESSAGE_TOO_LARGE"): (502, "response_too_large"),
    ("RESOURCE_EXHAUSTED", ""): (429, "rate_limited"),
    ("INVALID_ARGUMENT", "BODY_TOO_LARGE"): (413, "body_too_large"),
    ("INVALID_ARGUMENT", ""): (400, "invalid_argument"),
    ("FAILED_PRECONDITION", ""): (409, "failed_precondition"),
    ("ALREADY_EXISTS", ""): (409, "already_exists"),
    ("UNAUTHENTICATED", ""): (401, "unauthenticated"),
    ("UNAVAILABLE", ""): (503, "unavailable"),
    ("DEADLINE_EXCEEDED", ""): (503, "unavailable"),
    # The storage service refused a read in a way the client cannot fix: the edge is a gateway here.
    ("INTERNAL", "STORAGE_FAILED"): (502, "storage_failed"),
}


class _ErrorFields(TypedDict):
    # Always false.
    success: bool
    # A stable code: what a client branches on (the status's description lists the route's codes).
    error: str


# Two classes rather than NotRequired, which postponed annotations hide from TypedDict before Python 3.14.
class ErrorOut(_ErrorFields, total=False):
    """Every error answer (but /health's 503, which is the health report)."""

    # What to fix, when the caller can (a bad parameter, an invalid chart id); never more than that.
    message: str


# What each status means on every route that answers it; routes may say more of their own.
ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "A parameter or the body is not valid (invalid_argument; message names the parameter)",
    401: "No bearer API key, or one that is not accepted (unauthenticated)",
    403: "The key may not read this user (forbidden)",
    404: "No such user or object (not_found); never says whether it existed",
    408: "The body did not arrive in time (body_timeout)",
    409: "The change conflicts with the object's state (failed_precondition, already_exists)",
    413: "The body is too large (body_too_large)",
    429: "Over the rate limit (rate_limited) or the monthly quota (quota_exceeded); see Retry-After",
    431: "Too many or too large request headers (headers_too_large)",
    500: "An unexpected failure (internal); the answer says nothing more",
    502: "A service behind the edge failed in a way no retry fixes (storage_failed, response_too_large)",
    503: "A service behind the edge is unavailable (unavailable); see Retry-After",
}
# Every route can answer these: a header flood, an unexpected failure.
COMMON_ERROR_STATUSES = (431, 500)


def error_responses(
    statuses: Iterable[int], descriptions: Mapping[int, str] | None = None
) -> dict[int, ResponseSpec]:
    """The OpenAPI declaration of a route's error answers: ErrorOut, described per status."""
    own = descriptions or {}
    return {
        status: ResponseSpec(
            data_container=ErrorOut,
            description=own.get(status) or ERROR_DESCRIPTIONS[status],
            generate_examples=False,
        )
        for status in sorted({*COMMON_ERROR_STATUSES, *statuses})
    }


def http_status_for(error: AlertsError) -> tuple[int, str]:
    code = error.code.name
    return _HTTP_BY_ERROR.get((code, error.reason)) or _HTTP_BY_ERROR.get((code, ""), (500, "internal"))


def error_body(name: str, message: str | None = None) -> dict[str, Any]:
    return {"success": False, "error": name} | ({"message": message} if message else {})


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer as plain data, which a Litestar Response (to_response) or the webhook's raw ASGI path
    (edge.webhook_fast_path) sends the same way: a JSON body, its status and its own headers."""

    status: int
    body: dict[str, Any]
    headers: Mapping[str, str]


def refusal(
    status: int, name: str, headers: Mapping[str, str] | None = None, message: str | None = None
) -> Answer:
    """An error answer in the one shape; never cached, and 401s say how to authenticate."""
    all_headers = {"Cache-Control": "no-store", **(headers or {})}
    if status == 401:
        all_headers["WWW-Authenticate"] = 'Bearer realm="alerts"'
    return Answer(status, error_body(name, message), all_headers)


def error_answer(error: AlertsError) -> Answer:
    status, name = http_status_for(error)
    headers = {}
    retry_after = retry_after_header(error)
    if retry_after is not None and status in (429, 503):
        headers["Retry-After"] = retry_after
    # 404s say nothing more: a token that never existed and a rotated one look the same.
    return refusal(status, name, headers)


def unexpected_failure(method: str, route: str, exc: BaseException) -> Answer:
    """A logged 500. Neither the message nor the traceback reaches the client: either may hold what it
    must not see. `route` is the route's template, not its path: a webhook's path carries its token."""
    log.error("unhandled error answering a request", exc_info=exc, extra={"method": method, "route": route})
    return refusal(500, "internal")


def to_response(answer: Answer) -> Response[Any]:
    return Response(answer.body, status_code=answer.status, headers=dict(answer.headers))


def refusal_response(
    status: int, name: str, headers: Mapping[str, str] | None = None, message: str | None = None
) -> Response[Any]:
    return to_response(refusal(status, name, headers, message))


def error_response(error: AlertsError) -> Response[Any]:
    return to_response(error_answer(error))


def _answer_domain_error(_request: Request[Any, Any, Any], exc: AlertsError) -> Response[Any]:
    return error_response(exc)


def _answer_http_exception(_request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    message = _invalid_parameters(exc) if isinstance(exc, ValidationException) else None
    return refusal_response(exc.status_code, _http_error_name(exc), exc.headers, message)


def _invalid_parameters(exc: ValidationException) -> str | None:
    """Which parameters were refused, by name and place only: Litestar's own detail names the request's
    path, and a webhook's path carries its token."""
    extra = exc.extra if isinstance(exc.extra, list) else []
    names = [_parameter_name(item) for item in extra if isinstance(item, dict) and item.get("key")]
    return "invalid " + ", ".join(names) if names else None


def _parameter_name(item: dict[str, Any]) -> str:
    # Litestar names the place with its ParamType enum ("query", "path", "header", "cookie").
    source = getattr(item.get("source"), "value", item.get("source"))
    return f"{source} parameter {item['key']}" if source else f"parameter {item['key']}"


def _http_error_name(exc: HTTPException) -> str:
    """The table's code for a 400 Litestar raises on a bad parameter; otherwise the status's phrase."""
    if isinstance(exc, ValidationException):
        return "invalid_argument"
    try:
        return HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


def _answer_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    return to_response(unexpected_failure(request.method, request.scope.get("path_template", ""), exc))


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    AlertsError: _answer_domain_error,
    HTTPException: _answer_http_exception,
    Exception: _answer_unexpected,
}
