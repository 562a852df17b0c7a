"""classify_failure: the one table the capture worker, the notify worker and the edge's spool retry by."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import status_pb2

from mesh.errors import KEY_REFUSAL_REASONS, AlertsError, Failure, classify_failure, from_rpc_status

_S = grpc.StatusCode

EXPECTED = {
    _S.OK: Failure.FAULT,
    _S.CANCELLED: Failure.PEER_AWAY,
    _S.UNKNOWN: Failure.FAULT,
    _S.INVALID_ARGUMENT: Failure.REFUSED,
    _S.DEADLINE_EXCEEDED: Failure.PEER_AWAY,
    _S.NOT_FOUND: Failure.REFUSED,
    _S.ALREADY_EXISTS: Failure.REFUSED,
    _S.PERMISSION_DENIED: Failure.REFUSED,
    _S.RESOURCE_EXHAUSTED: Failure.REFUSED,
    _S.FAILED_PRECONDITION: Failure.REFUSED,
    _S.ABORTED: Failure.FAULT,
    _S.OUT_OF_RANGE: Failure.REFUSED,
    _S.UNIMPLEMENTED: Failure.FAULT,
    _S.INTERNAL: Failure.FAULT,
    _S.UNAVAILABLE: Failure.PEER_AWAY,
    _S.DATA_LOSS: Failure.FAULT,
    _S.UNAUTHENTICATED: Failure.FAULT,
}


def test_the_table_covers_every_status_code() -> None:
    assert set(EXPECTED) == set(grpc.StatusCode)


@pytest.mark.parametrize(("code", "expected"), EXPECTED.items(), ids=lambda value: getattr(value, "name", ""))
def test_each_status_code_is_classified(code: grpc.StatusCode, expected: Failure) -> None:
    # As a client sees it: the error rebuilt from the status the call ended with.
    error = from_rpc_status(status_pb2.Status(code=code.value[0], message="x"))
    assert error.code == code
    assert classify_failure(error) is expected


@pytest.mark.parametrize("reason", sorted(KEY_REFUSAL_REASONS))
def test_a_refused_key_is_the_callers_setup_not_a_refused_request(reason: str) -> None:
    error = AlertsError("the role may not call this", reason=reason)
    error.code = grpc.StatusCode.PERMISSION_DENIED
    assert classify_failure(error) is Failure.FAULT


def test_other_permission_refusals_are_definitive() -> None:
    error = AlertsError("user-scoped keys are read-only", reason="USER_SCOPE")
    error.code = grpc.StatusCode.PERMISSION_DENIED
    assert classify_failure(error) is Failure.REFUSED
