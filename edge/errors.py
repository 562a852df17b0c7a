"""The one table from domain errors (as carried by gRPC) to HTTP answers."""

from __future__ import annotations

from litestar import Response

from mesh.errors import AlertsError, retry_after_header

# (gRPC status name, ErrorInfo reason or "" for any) -> (HTTP status, error code in the JSON body)
_HTTP_BY_ERROR: dict[tuple[str, str], tuple[int, str]] = {
    ("NOT_FOUND", ""): (404, "not_found"),
    ("PERMISSION_DENIED", "IP_NOT_ALLOWED"): (403, "ip_not_allowed"),
    ("PERMISSION_DENIED", "WEBHOOK_DISABLED"): (403, "webhook_disabled"),
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
}


def http_status_for(error: AlertsError) -> tuple[int, str]:
    code = error.code.name
    return _HTTP_BY_ERROR.get((code, error.reason)) or _HTTP_BY_ERROR.get((code, ""), (500, "internal"))


def error_response(error: AlertsError) -> Response:
    status, name = http_status_for(error)
    headers = {"Cache-Control": "no-store"}
    retry_after = retry_after_header(error)
    if retry_after is not None and status in (429, 503):
        headers["Retry-After"] = retry_after
    # 404s say nothing more: a token that never existed and a rotated one look the same.
    body = {"success": False, "error": name}
    return Response(body, status_code=status, headers=headers)
