"""The edge's one table from errors to HTTP answers, registered once on the app.

Every non-2xx answer has one shape, ``{"success": false, "error": "<code>"}``: domain errors (raised by
handlers, or carried back over gRPC) through the table below, Litestar's own refusals (unknown route,
wrong method, unparsable parameter) by their status, and anything unexpected as a logged 500.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
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


def http_status_for(error: AlertsError) -> tuple[int, str]:
    code = error.code.name
    return _HTTP_BY_ERROR.get((code, error.reason)) or _HTTP_BY_ERROR.get((code, ""), (500, "internal"))


def error_body(name: str, message: str | None = None) -> dict[str, Any]:
    return {"success": False, "error": name} | ({"message": message} if message else {})


def refusal_response(
    status: int, name: str, headers: Mapping[str, str] | None = None, message: str | None = None
) -> Response[Any]:
    """An error answer in the one shape; never cached, and 401s say how to authenticate."""
    all_headers = {"Cache-Control": "no-store", **(headers or {})}
    if status == 401:
        all_headers["WWW-Authenticate"] = 'Bearer realm="alerts"'
    return Response(error_body(name, message), status_code=status, headers=all_headers)


def error_response(error: AlertsError) -> Response[Any]:
    status, name = http_status_for(error)
    headers = {}
    retry_after = retry_after_header(error)
    if retry_after is not None and status in (429, 503):
        headers["Retry-After"] = retry_after
    # 404s say nothing more: a token that never existed and a rotated one look the same.
    return refusal_response(status, name, headers)


def _answer_domain_error(_request: Request[Any, Any, Any], exc: AlertsError) -> Response[Any]:
    return error_response(exc)


def _answer_http_exception(_request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    return refusal_response(exc.status_code, _http_error_name(exc), exc.headers)


def _http_error_name(exc: HTTPException) -> str:
    """The table's code for a 400 Litestar raises on a bad parameter; otherwise the status's phrase."""
    if isinstance(exc, ValidationException):
        return "invalid_argument"
    try:
        return HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


def _answer_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    # Neither the message nor the traceback reaches the client: either may hold what it must not see.
    # The route's template, not its path: a webhook's path carries its token.
    log.error(
        "unhandled error answering a request",
        exc_info=exc,
        extra={"method": request.method, "route": request.scope.get("path_template", "")},
    )
    return refusal_response(500, "internal")


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    AlertsError: _answer_domain_error,
    HTTPException: _answer_http_exception,
    Exception: _answer_unexpected,
}
