"""``GET /media/{key}``: serves locally stored objects behind HMAC-signed, expiring URLs.

The edge checks the signature itself (no storage call for a forged or expired link), then streams the
object from StorageService.GetObject. The app must hold, in its state:

- ``storage_stub``: a ``StorageServiceStub`` on a long-lived channel (``mesh.grpc.open_channel``),
- ``media_signing_secret``: ``mesh.signing.media_signing_secret(settings)``;

and answers refusals by raising: the app registers ``edge.errors.EXCEPTION_HANDLERS``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import grpc
from litestar import Request, Response, get
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIType
from litestar.params import FromPath, QueryParameter
from litestar.response import Stream

from apidevs.alerts.v1 import storage_service_pb2, storage_service_pb2_grpc
from edge.errors import error_responses
from edge.openapi import MediaOperation, absent_or
from mesh.errors import (
    AlertsError,
    InternalError,
    NotFoundError,
    PermissionDeniedError,
    UnavailableError,
    from_rpc_error,
)
from mesh.signing import MediaSignatureError, verify_media_signature

log = logging.getLogger(__name__)

# Long enough for the largest object over a slow link; the first message (the info) comes at once.
_GET_OBJECT_TIMEOUT_SECONDS = 120.0
_UNAVAILABLE_RETRY_AFTER_SECONDS = 1.0
# Mapped to 502 by edge.errors: storage failed in a way the client cannot fix.
_STORAGE_FAILED = "STORAGE_FAILED"
# Stored content is served from the edge's own origin, so nothing in it may run or be sniffed into HTML.
_SANDBOX_POLICY = "sandbox; default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'"


@get(
    "/media/{key:path}",
    summary="A stored object, by signed URL",
    description="The link's `expires` and `sig` come from a signal's screenshot_url. An If-None-Match "
    "naming the object's ETag is answered 304.",
    tags=["media"],
    operation_id="getMedia",
    # The handler streams the object, so its 200 (image/png) is declared there.
    operation_class=MediaOperation,
    responses={
        304: ResponseSpec(None, description="Not modified: the If-None-Match ETag is the object's"),
        **error_responses(
            (400, 403, 404, 502, 503),
            {
                403: "The link expired (link_expired) or its signature is wrong (link_invalid)",
                404: "No such object (not_found)",
                502: "Storage failed in a way no retry fixes (storage_failed)",
                503: "Storage is unavailable (unavailable); see Retry-After",
            },
        ),
    },
)
async def get_media(
    request: Request[Any, Any, Any],
    key: FromPath[Path],
    expires: Annotated[str | None, QueryParameter(schema_extra=absent_or(OpenAPIType.STRING))] = None,
    sig: Annotated[str | None, QueryParameter(schema_extra=absent_or(OpenAPIType.STRING))] = None,
) -> Response[Any]:
    object_key = str(key).removeprefix("/")
    try:
        expires_at = verify_media_signature(object_key, expires, sig, request.app.state.media_signing_secret)
    except MediaSignatureError as exc:
        raise PermissionDeniedError(str(exc), reason=f"MEDIA_LINK_{exc.reason.upper()}") from exc

    stub: storage_service_pb2_grpc.StorageServiceAsyncStub = request.app.state.storage_stub
    call = stub.GetObject(
        storage_service_pb2.GetObjectRequest(key=object_key), timeout=_GET_OBJECT_TIMEOUT_SECONDS
    )
    messages = aiter(call)
    try:
        first = await anext(messages)
    except grpc.aio.AioRpcError as exc:
        raise _storage_refusal(from_rpc_error(exc)) from exc
    except StopAsyncIteration as exc:
        log.error("storage sent no object info", extra={"key": object_key})
        raise InternalError("storage sent no object info", reason=_STORAGE_FAILED) from exc
    info = first.info

    headers = {
        "Cache-Control": f"private, max-age={max(0, expires_at - int(time.time()))}",
        "Content-Length": str(info.size_bytes),
        "Last-Modified": _http_date(info.created_at.seconds),
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": _SANDBOX_POLICY,
        "Content-Disposition": "inline" if info.content_type.startswith("image/") else "attachment",
    }
    if info.sha256:
        headers["ETag"] = f'"{info.sha256}"'
        if request.headers.get("if-none-match") == headers["ETag"]:
            call.cancel()
            del headers["Content-Length"]
            return Response(b"", status_code=304, headers=headers)
    return Stream(_chunks(call, messages), media_type=info.content_type, headers=headers)


async def _chunks(
    call: grpc.aio.UnaryStreamCall[Any, Any], messages: AsyncIterator[storage_service_pb2.GetObjectResponse]
) -> AsyncIterator[bytes]:
    try:
        async for message in messages:
            yield message.chunk
    except grpc.aio.AioRpcError as exc:
        # Headers are sent: the response is cut short, which the client sees as a length mismatch.
        log.error("object stream broke", extra={"code": exc.code().name, "details": exc.details()})
        raise
    finally:
        # The browser may go away mid-download; storage then stops reading too.
        call.cancel()


def _storage_refusal(error: AlertsError) -> AlertsError:
    """What the client is told (through edge.errors' table) when storage refuses the read."""
    if isinstance(error, NotFoundError):
        return error
    if isinstance(error, UnavailableError):
        if error.retry_after_seconds is None:
            error.retry_after_seconds = _UNAVAILABLE_RETRY_AFTER_SECONDS
        return error
    log.error("storage refused an object read", extra={"error": str(error)})
    return InternalError("storage refused an object read", reason=_STORAGE_FAILED)


def _http_date(unix_seconds: int) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(unix_seconds))
