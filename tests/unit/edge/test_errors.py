"""The edge's one table from gRPC failures to HTTP answers, fed by real gRPC calls."""

from __future__ import annotations

import hashlib

import grpc
import pytest

from apidevs.alerts.v1 import resources_pb2, signal_service_pb2, signal_service_pb2_grpc
from edge.errors import error_response, http_status_for
from mesh import grpc as mesh_grpc
from mesh.errors import MESSAGE_TOO_LARGE, ResourceExhaustedError, from_rpc_error
from mesh.settings import CommonSettings

KEY = "edge-errors-test-key"
# Over the 8 MiB mesh channels accept.
OVERSIZED_TEXT = "x" * (9 * 1024 * 1024)


class _Answering(signal_service_pb2_grpc.SignalServiceServicer):
    async def GetSignal(self, request, context):
        if request.signal_id == "limited":
            raise ResourceExhaustedError("slow down", reason="RATE_LIMITED", retry_after_seconds=2)
        return resources_pb2.Signal(signal_id=request.signal_id, raw_text=OVERSIZED_TEXT)


@pytest.fixture
async def address():
    settings = CommonSettings(api_keys="sha256:" + hashlib.sha256(KEY.encode()).hexdigest())
    server = mesh_grpc.create_server(settings)
    signal_service_pb2_grpc.add_SignalServiceServicer_to_server(_Answering(), server)
    port, _ = await mesh_grpc.start(server, address="127.0.0.1:0", service_names=["x"])
    yield f"127.0.0.1:{port}"
    await server.stop(0)


async def _failure(address: str, signal_id: str) -> grpc.aio.AioRpcError:
    async with mesh_grpc.open_channel(address, KEY) as channel:
        stub = signal_service_pb2_grpc.SignalServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetSignal(signal_service_pb2.GetSignalRequest(signal_id=signal_id))
    return caught.value


async def test_an_answer_over_the_grpc_size_limit_is_502_not_429(address) -> None:
    failure = await _failure(address, "huge")
    assert failure.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    error = from_rpc_error(failure)
    assert error.reason == MESSAGE_TOO_LARGE
    assert http_status_for(error) == (502, "response_too_large")
    response = error_response(error)
    assert "retry-after" not in {name.lower() for name in response.headers}


async def test_a_rate_limit_stays_429(address) -> None:
    error = from_rpc_error(await _failure(address, "limited"))
    assert http_status_for(error) == (429, "rate_limited")
    assert error_response(error).headers["Retry-After"] == "2"
