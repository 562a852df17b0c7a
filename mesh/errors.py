"""The one hierarchy of domain errors, and its one mapping to and from gRPC status.

Services raise these; the gRPC server interceptor turns them into a status code with rich details
(google.rpc.ErrorInfo carrying ``reason`` and metadata, RetryInfo carrying ``retry_after_seconds``), and
clients turn a failed call back into the same type with :func:`from_rpc_error`.
"""

from __future__ import annotations

import enum
import math

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

ERROR_DOMAIN = "alerts.apidevs.com"
# The reason given to a RESOURCE_EXHAUSTED raised by gRPC itself rather than by a service.
MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"


class AlertsError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(
        self,
        message: str,
        *,
        reason: str = "",
        metadata: dict[str, str] | None = None,
        retry_after_seconds: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.metadata = dict(metadata or {})
        self.retry_after_seconds = retry_after_seconds


class ConfigurationError(AlertsError):
    """The process's own configuration is wrong: it stops at start-up and never answers a call."""


class InvalidArgumentError(AlertsError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFoundError(AlertsError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(AlertsError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDeniedError(AlertsError):
    code = grpc.StatusCode.PERMISSION_DENIED


class UnauthenticatedError(AlertsError):
    code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhaustedError(AlertsError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPreconditionError(AlertsError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class UnavailableError(AlertsError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceededError(AlertsError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class InternalError(AlertsError):
    code = grpc.StatusCode.INTERNAL


_BY_CODE: dict[grpc.StatusCode, type[AlertsError]] = {
    cls.code: cls
    for cls in (
        InvalidArgumentError,
        NotFoundError,
        AlreadyExistsError,
        PermissionDeniedError,
        UnauthenticatedError,
        ResourceExhaustedError,
        FailedPreconditionError,
        UnavailableError,
        DeadlineExceededError,
        InternalError,
    )
}


def to_rpc_status(error: AlertsError) -> status_pb2.Status:
    details = []
    if error.reason:
        info = error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata)
        details.append(info)
    if error.retry_after_seconds is not None:
        seconds = max(0.0, error.retry_after_seconds)
        delay = duration_pb2.Duration(seconds=int(seconds), nanos=int((seconds % 1) * 1e9))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    status = status_pb2.Status(code=error.code.value[0], message=error.message)
    for detail in details:
        status.details.add().Pack(detail)
    return status


def to_grpc_status(error: AlertsError) -> grpc.Status:
    return rpc_status.to_status(to_rpc_status(error))


def from_rpc_error(exc: grpc.aio.AioRpcError) -> AlertsError:
    """The typed error a failed call carries; transport failures become UnavailableError."""
    code = exc.code()
    status = _status_from_trailers(exc)
    if status is None:
        status = status_pb2.Status()
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            # Every RESOURCE_EXHAUSTED our servers send carries ErrorInfo; one without came from gRPC
            # itself: a message over its size limit, a fault of the call rather than the caller's quota.
            info = error_details_pb2.ErrorInfo(reason=MESSAGE_TOO_LARGE, domain=ERROR_DOMAIN)
            status.details.add().Pack(info)
    status.code = code.value[0]
    status.message = exc.details() or code.name
    return from_rpc_status(status)


_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def from_rpc_status(status: status_pb2.Status) -> AlertsError:
    """The typed error a google.rpc.Status describes (see to_rpc_status)."""
    code = _CODE_BY_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN)
    cls = _BY_CODE.get(code, InternalError if code != grpc.StatusCode.CANCELLED else UnavailableError)
    reason = ""
    metadata: dict[str, str] = {}
    retry_after: float | None = None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_after = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
    message = status.message or code.name
    error = cls(message, reason=reason, metadata=metadata, retry_after_seconds=retry_after)
    error.code = code
    return error


def _status_from_trailers(exc: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    for key, value in exc.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status = status_pb2.Status()
            status.ParseFromString(value)
            return status
    return None


# PERMISSION_DENIED reasons that refuse the caller's key, not the request: a misconfigured key, which an
# operator fixes.
KEY_REFUSAL_REASONS = frozenset({"ROLE", "EDGE_ONLY_FIELD"})


class Failure(enum.Enum):
    """What a failed call says about making the same call again (see :func:`classify_failure`)."""

    # The peer, or what it depends on, is away or too slow: the same call may well succeed later.
    PEER_AWAY = "peer_away"
    # The peer judged this request and said no: the same request gets the same answer.
    REFUSED = "refused"
    # A fault of the peer (a bug) or of the caller's setup (its key): it may pass once an operator acts.
    FAULT = "fault"


_PEER_AWAY_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)
_REFUSAL_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)


def classify_failure(error: AlertsError) -> Failure:
    """The one answer to "retry this call?" for every client (capture and notify workers, the edge's
    spool): PEER_AWAY is worth retrying as it is; REFUSED never is; FAULT is worth keeping, not spinning on.
    A refusal of the caller's key (KEY_REFUSAL_REASONS) and UNAUTHENTICATED are the caller's setup, so FAULT.
    """
    if error.code in _PEER_AWAY_CODES:
        return Failure.PEER_AWAY
    if error.code in _REFUSAL_CODES and error.reason not in KEY_REFUSAL_REASONS:
        return Failure.REFUSED
    return Failure.FAULT


def retry_after_header(error: AlertsError) -> str | None:
    if error.retry_after_seconds is None:
        return None
    return str(max(1, math.ceil(error.retry_after_seconds)))
