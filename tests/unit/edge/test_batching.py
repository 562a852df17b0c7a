"""The edge's IngestBatcher against a real gRPC server: batches form under load, answers stay per webhook."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from apidevs.alerts.v1 import signal_service_pb2, signal_service_pb2_grpc
from edge.batching import IngestBatcher
from mesh import grpc as mesh_grpc
from mesh.errors import NotFoundError, UnavailableError, to_rpc_status
from mesh.logging import request_id_var
from mesh.settings import CommonSettings


class _Recording(signal_service_pb2_grpc.SignalServiceServicer):
    """Answers each webhook by its body: b"missing" is NOT_FOUND, anything else is stored as itself."""

    def __init__(self, *, batches: bool = True) -> None:
        self.batch_sizes: list[int] = []
        self.request_ids: list[str] = []
        self.single_calls = 0
        self.release = asyncio.Event()
        self.release.set()
        self._batches = batches

    async def BatchIngestWebhooks(self, request, context):
        if not self._batches:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")
        self.batch_sizes.append(len(request.requests))
        self.request_ids.append(request_id_var.get())
        await self.release.wait()
        return signal_service_pb2.BatchIngestWebhooksResponse(
            results=[_result(item) for item in request.requests]
        )

    async def IngestWebhook(self, request, context):
        self.single_calls += 1
        result = _result(request)
        if result.HasField("error_status"):
            raise NotFoundError("unknown webhook", reason="UNKNOWN_TOKEN")
        return result.response


def _result(request: signal_service_pb2.IngestWebhookRequest) -> signal_service_pb2.IngestWebhookResult:
    if request.body == b"missing":
        error = NotFoundError("unknown webhook", reason="UNKNOWN_TOKEN")
        return signal_service_pb2.IngestWebhookResult(error_status=to_rpc_status(error).SerializeToString())
    return signal_service_pb2.IngestWebhookResult(
        response=signal_service_pb2.IngestWebhookResponse(signal_id=request.body.decode())
    )


async def _serve(servicer: _Recording) -> tuple[grpc.aio.Server, str]:
    settings = CommonSettings(api_keys="k1@role:edge")
    server = mesh_grpc.create_server(settings)
    signal_service_pb2_grpc.add_SignalServiceServicer_to_server(servicer, server)
    port, _ = await mesh_grpc.start(server, address="127.0.0.1:0", service_names=["x"])
    return server, f"127.0.0.1:{port}"


@pytest.fixture
async def recording() -> AsyncIterator[tuple[_Recording, IngestBatcher]]:
    servicer = _Recording()
    server, address = await _serve(servicer)
    async with mesh_grpc.open_channel(address, "k1", per_call_metadata=True) as channel:
        stub = signal_service_pb2_grpc.SignalServiceStub(channel)
        yield servicer, IngestBatcher(stub, api_key="k1", timeout_seconds=5, max_batch=50, max_inflight=1)
    await server.stop(0)


def _webhook(body: bytes) -> signal_service_pb2.IngestWebhookRequest:
    return signal_service_pb2.IngestWebhookRequest(webhook_token="t", body=body)


async def test_a_lone_webhook_goes_at_once_and_a_crowd_shares_calls(recording) -> None:
    servicer, batcher = recording
    alone = _webhook(b"alone")
    alone.request_id = "req-alone"
    assert (await batcher.ingest(alone)).signal_id == "alone"
    assert servicer.batch_sizes == [1]
    # The key (else UNAUTHENTICATED) and the request id travel with the call, without interceptors.
    assert servicer.request_ids == ["req-alone"]

    servicer.release.clear()
    first = asyncio.create_task(batcher.ingest(_webhook(b"first")))
    await asyncio.sleep(0.2)
    crowd = [asyncio.create_task(batcher.ingest(_webhook(f"w{i}".encode()))) for i in range(120)]
    await asyncio.sleep(0.1)
    servicer.release.set()
    answers = await asyncio.gather(first, *crowd)

    assert [answer.signal_id for answer in answers] == ["first", *(f"w{i}" for i in range(120))]
    # One call at a time, at most 50 webhooks per call: the crowd waited for "first" and took 3 calls.
    assert servicer.batch_sizes == [1, 1, 50, 50, 20]


async def test_a_refused_webhook_fails_alone_with_its_own_error(recording) -> None:
    _, batcher = recording
    answers = await asyncio.gather(
        batcher.ingest(_webhook(b"ok")), batcher.ingest(_webhook(b"missing")), return_exceptions=True
    )
    assert answers[0].signal_id == "ok"
    assert isinstance(answers[1], NotFoundError)
    assert answers[1].reason == "UNKNOWN_TOKEN"


async def test_a_caller_that_gave_up_before_sending_is_left_out(recording) -> None:
    servicer, batcher = recording
    servicer.release.clear()
    first = asyncio.create_task(batcher.ingest(_webhook(b"first")))
    await asyncio.sleep(0.2)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await batcher.ingest(_webhook(b"impatient"))
    waiting = asyncio.create_task(batcher.ingest(_webhook(b"patient")))
    await asyncio.sleep(0.1)
    servicer.release.set()
    assert [(await first).signal_id, (await waiting).signal_id] == ["first", "patient"]
    assert servicer.batch_sizes == [1, 1]


async def test_an_older_signal_service_gets_one_call_per_webhook() -> None:
    servicer = _Recording(batches=False)
    server, address = await _serve(servicer)
    try:
        async with mesh_grpc.open_channel(address, "k1", per_call_metadata=True) as channel:
            stub = signal_service_pb2_grpc.SignalServiceStub(channel)
            batcher = IngestBatcher(stub, api_key="k1", timeout_seconds=5)
            answers = await asyncio.gather(
                *(batcher.ingest(_webhook(body)) for body in (b"a", b"b", b"missing")), return_exceptions=True
            )
    finally:
        await server.stop(0)
    assert [answer.signal_id for answer in answers[:2]] == ["a", "b"]
    assert isinstance(answers[2], NotFoundError)
    assert servicer.single_calls == 3


async def test_an_unreachable_signal_service_is_unavailable_for_every_webhook() -> None:
    async with mesh_grpc.open_channel("127.0.0.1:9", "k1", per_call_metadata=True) as channel:
        stub = signal_service_pb2_grpc.SignalServiceStub(channel)
        batcher = IngestBatcher(stub, api_key="k1", timeout_seconds=2)
        answers = await asyncio.gather(
            *(batcher.ingest(_webhook(b"x")) for _ in range(3)), return_exceptions=True
        )
    assert all(isinstance(answer, UnavailableError) for answer in answers)
