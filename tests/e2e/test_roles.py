"""Issue 19, finding 1: each key has one role, and the signal and storage processes refuse every RPC its
role is not listed for in mesh/roles.py (PERMISSION_DENIED), before the handler runs.

Through real processes (tests/e2e/stacks.py: storage, signal and an edge), each call presenting one key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from alerts.stack import Stack
from apidevs.alerts.v1 import (
    resources_pb2,
    signal_service_pb2,
    signal_service_pb2_grpc,
    storage_service_pb2,
    storage_service_pb2_grpc,
    user_service_pb2,
    user_service_pb2_grpc,
)
from mesh.grpc import open_channel
from tests.keys import PLATFORM_KEY, SYSTEM_KEYS
from tests.support import SAMPLE, create_user, ingest_request

pytestmark = pytest.mark.asyncio(loop_scope="session")


class Caller:
    """One key's view of the stack's signal and storage services."""

    def __init__(self, signal: grpc.aio.Channel, storage: grpc.aio.Channel) -> None:
        self.signals = signal_service_pb2_grpc.SignalServiceStub(signal)
        self.users = user_service_pb2_grpc.UserServiceStub(signal)
        self.storage = storage_service_pb2_grpc.StorageServiceStub(storage)


@pytest.fixture(scope="module")
async def callers(edge_stack: Stack) -> AsyncIterator[dict[str, Caller]]:
    keys = {
        "platform": PLATFORM_KEY,
        "admin": SYSTEM_KEYS.operator,
        "edge": SYSTEM_KEYS.edge,
        "worker": SYSTEM_KEYS.worker,
    }
    channels = {
        name: (open_channel(edge_stack.signal_addr, key), open_channel(edge_stack.storage_addr, key))
        for name, key in keys.items()
    }
    yield {name: Caller(*pair) for name, pair in channels.items()}
    for signal, storage in channels.values():
        await signal.close()
        await storage.close()


@pytest.fixture(scope="module")
async def trader(callers: dict[str, Caller]) -> user_service_pb2.CreateUserResponse:
    return await create_user(callers["platform"].users)


@pytest.fixture(scope="module")
async def signal_id(callers: dict[str, Caller], trader: user_service_pb2.CreateUserResponse) -> str:
    answer = await callers["edge"].signals.IngestWebhook(ingest_request(trader.webhook_token))
    return answer.signal_id


async def denied(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED, caught.value.details()
    return caught.value


async def denied_stream(call: grpc.aio.UnaryStreamCall) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED, caught.value.details()


def put(key: str) -> AsyncIterator[storage_service_pb2.PutObjectRequest]:
    async def parts() -> AsyncIterator[storage_service_pb2.PutObjectRequest]:
        yield storage_service_pb2.PutObjectRequest(
            header=storage_service_pb2.PutObjectHeader(key=key, content_type="image/png")
        )
        yield storage_service_pb2.PutObjectRequest(chunk=b"\x89PNG forged")

    return parts()


async def test_the_platform_key_cannot_claim_or_report_captures_nor_ingest(
    callers: dict[str, Caller], trader: user_service_pb2.CreateUserResponse, signal_id: str
) -> None:
    platform = callers["platform"]
    before = await platform.signals.GetSignal(signal_service_pb2.GetSignalRequest(signal_id=signal_id))
    error = await denied(
        platform.signals.ClaimCapture(signal_service_pb2.ClaimCaptureRequest(signal_id=signal_id))
    )
    assert "platform role may not call ClaimCapture" in error.details()
    # Someone else's screenshot reported for this signal: refused, and the signal is untouched.
    await denied(
        platform.signals.ReportCapture(
            signal_service_pb2.ReportCaptureRequest(
                signal_id=signal_id,
                status=resources_pb2.SCREENSHOT_STATUS_COMPLETED,
                object_key=f"screenshots/{'0' * 32}/{signal_id}.png",
                size_bytes=100,
            )
        )
    )
    await denied(platform.signals.IngestWebhook(ingest_request(trader.webhook_token)))
    await denied(
        platform.signals.BatchIngestWebhooks(
            signal_service_pb2.BatchIngestWebhooksRequest(requests=[ingest_request(trader.webhook_token)])
        )
    )
    await denied(platform.signals.ClaimSessionCheck(signal_service_pb2.ClaimSessionCheckRequest()))
    await denied(platform.signals.RetryCaptures(signal_service_pb2.RetryCapturesRequest()))
    await denied(platform.storage.PutObject(put(f"screenshots/{trader.user.user_id}/forged.png")))
    after = await platform.signals.GetSignal(signal_service_pb2.GetSignalRequest(signal_id=signal_id))
    assert (after.screenshot_status, after.screenshot_url) == (
        before.screenshot_status,
        before.screenshot_url,
    )


async def test_a_forged_source_address_or_replay_id_from_the_platform_key_is_refused(
    callers: dict[str, Caller], trader: user_service_pb2.CreateUserResponse
) -> None:
    """The platform may not pose as the edge: no source_ip to pass an allowlist, no idempotency_key to
    skip rate limits, no received_at, no edge refusal; nor may the operator's admin key."""
    listed = signal_service_pb2.ListSignalsRequest(user_id=trader.user.user_id)
    stored_before = len((await callers["platform"].signals.ListSignals(listed)).signals)
    forged = ingest_request(
        trader.webhook_token, body=SAMPLE + b"\nforged", source_ip="198.51.100.1", idempotency_key="replay-1"
    )
    for name in ("platform", "admin", "worker"):
        await denied(callers[name].signals.IngestWebhook(forged))
        await denied(
            callers[name].signals.BatchIngestWebhooks(
                signal_service_pb2.BatchIngestWebhooksRequest(requests=[forged])
            )
        )
    assert len((await callers["platform"].signals.ListSignals(listed)).signals) == stored_before


async def test_the_edge_key_reads_nothing_and_manages_no_user(
    callers: dict[str, Caller], trader: user_service_pb2.CreateUserResponse, signal_id: str
) -> None:
    edge = callers["edge"]
    user_id = trader.user.user_id
    await denied(edge.signals.ListSignals(signal_service_pb2.ListSignalsRequest(user_id=user_id)))
    await denied(edge.signals.GetSignal(signal_service_pb2.GetSignalRequest(signal_id=signal_id)))
    await denied(edge.signals.GetUserStats(signal_service_pb2.GetUserStatsRequest(user_id=user_id)))
    await denied_stream(
        edge.signals.SubscribeSignals(signal_service_pb2.SubscribeSignalsRequest(user_id=user_id))
    )
    await denied(edge.users.CreateUser(user_service_pb2.CreateUserRequest(plan=resources_pb2.PLAN_FREE)))
    await denied(edge.users.GetUser(user_service_pb2.GetUserRequest(user_id=user_id)))
    await denied(edge.users.RotateWebhookToken(user_service_pb2.RotateWebhookTokenRequest(user_id=user_id)))
    await denied(edge.signals.ClaimCapture(signal_service_pb2.ClaimCaptureRequest(signal_id=signal_id)))
    await denied(edge.storage.PutObject(put(f"screenshots/{user_id}/forged.png")))
    await denied(edge.storage.DeleteObject(storage_service_pb2.DeleteObjectRequest(key="screenshots/x.png")))


async def test_the_worker_key_reads_no_user_or_signal(
    callers: dict[str, Caller], trader: user_service_pb2.CreateUserResponse, signal_id: str
) -> None:
    worker = callers["worker"]
    user_id = trader.user.user_id
    await denied(worker.users.GetUser(user_service_pb2.GetUserRequest(user_id=user_id)))
    await denied(worker.signals.GetSignal(signal_service_pb2.GetSignalRequest(signal_id=signal_id)))
    await denied(worker.signals.ListSignals(signal_service_pb2.ListSignalsRequest(user_id=user_id)))
    await denied(worker.signals.GetUserStats(signal_service_pb2.GetUserStatsRequest(user_id=user_id)))
    await denied_stream(
        worker.signals.SubscribeSignals(signal_service_pb2.SubscribeSignalsRequest(user_id=user_id))
    )
    await denied(
        worker.users.SetTradingViewSession(
            user_service_pb2.SetTradingViewSessionRequest(user_id=user_id, sessionid="stolen")
        )
    )


async def test_each_role_keeps_what_it_needs(
    callers: dict[str, Caller], edge_stack: Stack, trader: user_service_pb2.CreateUserResponse
) -> None:
    """The refusals above are the roles', not broken keys: each key still makes its own calls, and the
    edge process (presenting the edge key) still stores webhooks."""
    user_id = trader.user.user_id
    async with httpx.AsyncClient(base_url=edge_stack.edge_url) as client:
        answer = await client.post(
            f"/webhook/u/{trader.webhook_token}", content=SAMPLE + b"\nthrough the edge"
        )
    assert answer.status_code == 200, answer.text
    stored = answer.json()["signal_id"]
    listed = await callers["platform"].signals.ListSignals(
        signal_service_pb2.ListSignalsRequest(user_id=user_id)
    )
    assert stored in [signal.signal_id for signal in listed.signals]
    assert (await callers["admin"].users.GetUser(user_service_pb2.GetUserRequest(user_id=user_id))).user_id
    retried = await callers["admin"].signals.RetryCaptures(
        signal_service_pb2.RetryCapturesRequest(signal_ids=[stored])
    )
    assert retried.requeued_count == 0, "only FAILED captures are re-queued"
    claimed = await callers["worker"].signals.ClaimCapture(
        signal_service_pb2.ClaimCaptureRequest(signal_id=stored, worker_id="roles-test")
    )
    assert claimed.signal.signal_id == stored
    await callers["worker"].storage.PutObject(put(f"roles-test/{stored}.png"))


async def test_health_answers_without_a_key(edge_stack: Stack) -> None:
    for address in (edge_stack.signal_addr, edge_stack.storage_addr):
        async with grpc.aio.insecure_channel(address) as channel:
            checked = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert checked.status == health_pb2.HealthCheckResponse.SERVING
