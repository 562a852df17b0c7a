from __future__ import annotations

import logging

import grpc
import pytest

from apidevs.alerts.v1 import signal_service_pb2, signal_service_pb2_grpc
from mesh import grpc as mesh_grpc
from mesh.errors import (
    InternalError,
    NotFoundError,
    ResourceExhaustedError,
    UnavailableError,
    from_rpc_error,
)
from mesh.logging import request_id_var
from mesh.settings import CommonSettings


class _Refusing(signal_service_pb2_grpc.SignalServiceServicer):
    async def GetSignal(self, request, context):
        if request.signal_id == "missing":
            raise NotFoundError("no such signal", reason="SIGNAL_NOT_FOUND", metadata={"id": "missing"})
        if request.signal_id == "crash":
            raise RuntimeError("boom with a secret-looking detail")
        raise ResourceExhaustedError("slow down", reason="RATE_LIMITED", retry_after_seconds=2.5)


@pytest.fixture
async def address():
    settings = CommonSettings(api_keys="k1,sha256:" + __import__("hashlib").sha256(b"k2").hexdigest())
    server = mesh_grpc.create_server(settings)
    signal_service_pb2_grpc.add_SignalServiceServicer_to_server(_Refusing(), server)
    port, _ = await mesh_grpc.start(server, address="127.0.0.1:0", service_names=["x"])
    yield f"127.0.0.1:{port}"
    await server.stop(0)


async def _call(address: str, key: str | None, signal_id: str) -> grpc.aio.AioRpcError:
    async with mesh_grpc.open_channel(address, key) as channel:
        stub = signal_service_pb2_grpc.SignalServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetSignal(signal_service_pb2.GetSignalRequest(signal_id=signal_id))
    return caught.value


async def test_domain_errors_cross_the_wire_with_their_details(address) -> None:
    missing = from_rpc_error(await _call(address, "k1", "missing"))
    assert isinstance(missing, NotFoundError)
    assert (missing.reason, missing.metadata) == ("SIGNAL_NOT_FOUND", {"id": "missing"})

    limited = from_rpc_error(await _call(address, "k2", "other"))
    assert isinstance(limited, ResourceExhaustedError)
    assert limited.reason == "RATE_LIMITED"
    assert limited.retry_after_seconds == pytest.approx(2.5)


async def test_unexpected_errors_are_internal_without_details(address) -> None:
    error = await _call(address, "k1", "crash")
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in (error.details() or "")


@pytest.mark.parametrize("key", [None, "", "k3", "sha256:whatever"])
async def test_missing_or_wrong_keys_are_unauthenticated(address, key) -> None:
    assert (await _call(address, key, "missing")).code() == grpc.StatusCode.UNAUTHENTICATED


async def test_health_is_open_without_a_key(address) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with mesh_grpc.open_channel(address, None) as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


class _Failing(signal_service_pb2_grpc.SignalServiceServicer):
    async def GetSignal(self, request, context):
        if request.signal_id == "gone":
            raise ConnectionResetError("peer reset the connection")
        raise RuntimeError("boom")


class _Recorder(logging.Handler):
    """What mesh.grpc logs, with the request id current when it logged."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((record.getMessage(), request_id_var.get()))


def _connection_lost(exc: BaseException) -> UnavailableError | None:
    if isinstance(exc, ConnectionResetError):
        return UnavailableError("database unavailable", reason="DATABASE_UNAVAILABLE")
    return None


async def test_the_servers_translation_makes_an_outage_unavailable_and_the_rest_stay_internal() -> None:
    server = mesh_grpc.create_server(CommonSettings(api_keys="k1"), translate_error=_connection_lost)
    signal_service_pb2_grpc.add_SignalServiceServicer_to_server(_Failing(), server)
    port, _ = await mesh_grpc.start(server, address="127.0.0.1:0", service_names=["x"])
    recorder = _Recorder()
    logging.getLogger("mesh.grpc").addHandler(recorder)
    try:
        async with mesh_grpc.open_channel(f"127.0.0.1:{port}", "k1") as channel:
            stub = signal_service_pb2_grpc.SignalServiceStub(channel)
            answers = []
            for signal_id in ("gone", "crash"):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.GetSignal(
                        signal_service_pb2.GetSignalRequest(signal_id=signal_id),
                        metadata=(("x-request-id", f"req-{signal_id}"),),
                    )
                answers.append(from_rpc_error(caught.value))
    finally:
        logging.getLogger("mesh.grpc").removeHandler(recorder)
        await server.stop(0)

    assert [(type(error), error.reason) for error in answers] == [
        (UnavailableError, "DATABASE_UNAVAILABLE"),
        (InternalError, ""),
    ]
    assert recorder.seen == [("dependency unavailable", "req-gone"), ("unhandled error", "req-crash")]
