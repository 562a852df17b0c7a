"""The edge spool on a real SQLite file, and the replayer against a real gRPC server that answers as told."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apidevs.alerts.v1 import signal_service_pb2, signal_service_pb2_grpc
from edge.spool import SpoolFullError, SpoolReplayer, WebhookSpool, settles_replay
from mesh import grpc as mesh_grpc
from mesh.errors import (
    AlertsError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
)
from mesh.settings import CommonSettings
from tests.support import SAMPLE, now_timestamp


def webhook(token: str, body: bytes = SAMPLE, **fields: object) -> signal_service_pb2.IngestWebhookRequest:
    return signal_service_pb2.IngestWebhookRequest(
        webhook_token=token, body=body, received_at=now_timestamp(), **fields
    )


@pytest.fixture
async def spool(tmp_path: Path) -> AsyncIterator[WebhookSpool]:
    opened = WebhookSpool(tmp_path / "spool", max_bytes=1024 * 1024)
    await opened.open()
    yield opened
    await opened.close()


async def test_requests_come_back_in_order_with_every_field_and_a_fresh_key(spool: WebhookSpool) -> None:
    sent = [
        webhook(
            f"token-{index}",
            chart_id="abc",
            content_type="text/plain",
            source_ip="203.0.113.9",
            user_agent="Go-http-client/1.1",
            query={"ticker": "BTC"},
            body_size=len(SAMPLE),
        )
        for index in range(5)
    ]
    for index, request in enumerate(sent):
        stored = await spool.append(request, request_id=f"req-{index}")
        assert uuid.UUID(stored.idempotency_key).version == 4
        assert not request.idempotency_key, "the caller's request is left as it was"

    spooled = await spool.oldest(10)

    assert [item.request_id for item in spooled] == [f"req-{index}" for index in range(5)]
    keys = {item.request.idempotency_key for item in spooled}
    assert len(keys) == 5
    for item, original in zip(spooled, sent, strict=True):
        expected = signal_service_pb2.IngestWebhookRequest()
        expected.CopyFrom(original)
        expected.idempotency_key = item.request.idempotency_key
        assert item.request == expected


async def test_spooled_requests_survive_reopening(tmp_path: Path) -> None:
    first = WebhookSpool(tmp_path, max_bytes=1024 * 1024)
    await first.open()
    stored = await first.append(webhook("tok"), request_id="r1")
    await first.close()

    second = WebhookSpool(tmp_path, max_bytes=1024 * 1024)
    await second.open()
    try:
        [item] = await second.oldest(10)
        assert item.request == stored
        assert (await second.totals()).pending == 1
    finally:
        await second.close()


def test_an_append_that_returned_survives_a_sigkill(tmp_path: Path) -> None:
    """The 202 goes out after append returns: from then on the request must outlive the process."""
    script = f"""
import asyncio, sys
from pathlib import Path
from edge.spool import WebhookSpool
from apidevs.alerts.v1 import signal_service_pb2

async def main():
    spool = WebhookSpool(Path({str(tmp_path)!r}), max_bytes=1 << 20)
    await spool.open()
    for index in range(20):
        request = signal_service_pb2.IngestWebhookRequest(webhook_token=f"t{{index}}")
        await spool.append(request, request_id="r")
    print("appended", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=os.getcwd())
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"appended"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()

    async def read_back() -> list[str]:
        spool = WebhookSpool(tmp_path, max_bytes=1 << 20)
        await spool.open()
        try:
            return [item.request.webhook_token for item in await spool.oldest(100)]
        finally:
            await spool.close()

    assert asyncio.run(read_back()) == [f"t{index}" for index in range(20)]


async def test_a_full_spool_refuses_until_replays_make_room(tmp_path: Path) -> None:
    request = webhook("tok")
    one = len(request.SerializeToString()) + 38  # the idempotency key adds 38 bytes
    spool = WebhookSpool(tmp_path, max_bytes=one * 3)
    await spool.open()
    try:
        for _ in range(3):
            await spool.append(request, request_id="r")
        with pytest.raises(SpoolFullError):
            await spool.append(request, request_id="r")
        totals = await spool.totals()
        assert totals.pending == 3
        assert totals.bytes <= one * 3

        await spool.remove((await spool.oldest(1))[0].id)
        await spool.append(request, request_id="r")
        assert (await spool.totals()).pending == 3
    finally:
        await spool.close()


async def test_one_source_holds_at_most_its_share_however_its_appends_are_batched(tmp_path: Path) -> None:
    request = webhook("tok")
    one = len(request.SerializeToString()) + 38
    spool = WebhookSpool(tmp_path, max_bytes=one * 10, max_bytes_per_source=one * 2)
    await spool.open()
    try:
        together = await asyncio.gather(
            *(spool.append(request, request_id="a", source="198.51.100.7") for _ in range(4)),
            return_exceptions=True,
        )
        assert [isinstance(outcome, SpoolFullError) for outcome in together] == [False, False, True, True]
        with pytest.raises(SpoolFullError, match="from this source"):
            await spool.append(request, request_id="a", source="198.51.100.7")
        await spool.append(request, request_id="b", source="2001:db8::/64")
        await spool.append(request, request_id="c", source="198.51.100.8")
        assert (await spool.totals()).pending == 4

        await spool.remove((await spool.oldest(1))[0].id)
        await spool.append(request, request_id="a", source="198.51.100.7")
        assert (await spool.totals()).pending == 4
    finally:
        await spool.close()


async def test_the_spool_files_are_private_and_take_an_older_spool_in(tmp_path: Path) -> None:
    """A spool written before per-source limits (no source column, files 0644) opens, is restricted to
    its owner, and its records count as no one's."""
    import sqlite3

    directory = tmp_path / "spool"
    directory.mkdir(mode=0o755)
    older = sqlite3.connect(directory / "webhooks.sqlite3")
    older.executescript(
        "PRAGMA journal_mode = WAL;"
        "CREATE TABLE spooled_requests (id INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT NOT NULL,"
        " size INTEGER NOT NULL, request BLOB NOT NULL);"
    )
    older.execute(
        "INSERT INTO spooled_requests (request_id, size, request) VALUES ('old', 3, ?)",
        (webhook("old").SerializeToString(),),
    )
    older.commit()
    older.close()
    (directory / "webhooks.sqlite3").chmod(0o644)

    spool = WebhookSpool(directory, max_bytes=1 << 20, max_bytes_per_source=1 << 10)
    await spool.open()
    try:
        [old] = await spool.oldest(5)
        assert old.request.webhook_token == "old"
        await spool.append(webhook("new"), request_id="new", source="198.51.100.7")
        modes = {path.name: path.stat().st_mode & 0o777 for path in directory.iterdir() if path.is_file()}
        assert set(modes.values()) == {0o600}, modes
        assert directory.stat().st_mode & 0o777 == 0o700
    finally:
        await spool.close()


async def test_concurrent_appends_share_a_transaction_and_only_what_fits_is_kept(tmp_path: Path) -> None:
    request = webhook("tok")
    one = len(request.SerializeToString()) + 38
    spool = WebhookSpool(tmp_path, max_bytes=one * 5)
    await spool.open()
    try:
        outcomes = await asyncio.gather(
            *(spool.append(request, request_id=f"r{n}") for n in range(8)),
            return_exceptions=True,
        )
        kept = [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]
        refused = [outcome for outcome in outcomes if isinstance(outcome, SpoolFullError)]
        assert (len(kept), len(refused)) == (5, 3)
        # First come, first kept: the refused are the last three, and the spool holds the first five in order.
        assert all(isinstance(outcome, SpoolFullError) for outcome in outcomes[5:])
        stored = await spool.oldest(10)
        assert [item.request_id for item in stored] == [f"r{n}" for n in range(5)]
        assert [item.request.idempotency_key for item in stored] == [item.idempotency_key for item in kept]
    finally:
        await spool.close()


async def test_processes_sharing_a_spool_never_overfill_it(tmp_path: Path) -> None:
    """Each edge worker process opens the same file; the size check and the insert are one transaction."""
    request = webhook("tok")  # one request, one size: a timestamp's varint length varies with its value
    size = len(request.SerializeToString()) + 38
    spools = [WebhookSpool(tmp_path, max_bytes=size * 25) for _ in range(4)]
    for spool in spools:
        await spool.open()
    try:

        async def fill(spool: WebhookSpool) -> int:
            stored = 0
            for _ in range(20):
                try:
                    await spool.append(request, request_id="r")
                    stored += 1
                except SpoolFullError:
                    pass
            return stored

        stored = await asyncio.gather(*(fill(spool) for spool in spools))
        totals = await spools[0].totals()
        assert sum(stored) == totals.pending == 25
        assert totals.bytes <= size * 25
        assert [item.id for item in await spools[1].oldest(100)] == sorted(
            item.id for item in await spools[2].oldest(100)
        )
    finally:
        for spool in spools:
            await spool.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.binary(max_size=70_000),
    query=st.dictionaries(st.text(max_size=20), st.text(max_size=50), max_size=5),
    token=st.text(max_size=80),
    user_agent=st.text(max_size=200),
)
def test_any_request_round_trips_byte_for_byte(
    tmp_path: Path, body: bytes, query: dict[str, str], token: str, user_agent: str
) -> None:
    async def round_trip() -> signal_service_pb2.IngestWebhookRequest:
        spool = WebhookSpool(tmp_path / uuid.uuid4().hex, max_bytes=1 << 20)
        await spool.open()
        try:
            stored = await spool.append(
                webhook(token, body, query=query, user_agent=user_agent), request_id="r"
            )
            [item] = await spool.oldest(2)
            assert item.request == stored
            return item.request
        finally:
            await spool.close()

    request = asyncio.run(round_trip())
    assert (request.body, dict(request.query), request.webhook_token) == (body, query, token)


# --- the replayer ---------------------------------------------------------------------------------------


class _ScriptedSignalService(signal_service_pb2_grpc.SignalServiceServicer):
    """Answers IngestWebhook with the error queued for the token, else success; records what arrived."""

    def __init__(self) -> None:
        self.errors: dict[str, list[AlertsError]] = {}
        self.received: list[signal_service_pb2.IngestWebhookRequest] = []

    async def IngestWebhook(self, request, context):
        self.received.append(request)
        queued = self.errors.get(request.webhook_token)
        if queued:
            raise queued.pop(0)
        return signal_service_pb2.IngestWebhookResponse(signal_id=f"signal-{request.webhook_token}")


@pytest.fixture
async def scripted() -> AsyncIterator[
    tuple[_ScriptedSignalService, signal_service_pb2_grpc.SignalServiceStub]
]:
    service = _ScriptedSignalService()
    server = mesh_grpc.create_server(CommonSettings(api_keys="key@role:edge"))
    signal_service_pb2_grpc.add_SignalServiceServicer_to_server(service, server)
    port, _ = await mesh_grpc.start(server, address="127.0.0.1:0", service_names=["x"])
    channel = mesh_grpc.open_channel(f"127.0.0.1:{port}", "key")
    yield service, signal_service_pb2_grpc.SignalServiceStub(channel)
    await channel.close()
    await server.stop(0)


async def _refusal(stub: signal_service_pb2_grpc.SignalServiceStub, service, error: AlertsError):
    service.errors["probe"] = [error]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.IngestWebhook(webhook("probe"))
    return caught.value


@pytest.mark.parametrize(
    ("error", "settled"),
    [
        (NotFoundError("unknown webhook", reason="UNKNOWN_TOKEN"), True),
        (PermissionDeniedError("no", reason="IP_NOT_ALLOWED"), True),
        (InvalidArgumentError("too big", reason="BODY_TOO_LARGE"), True),
        (ResourceExhaustedError("quota", reason="QUOTA_EXCEEDED"), True),
        # A replay skips the user's limits: only its source's unknown-token limit answers this.
        (ResourceExhaustedError("slow down", reason="RATE_LIMITED", retry_after_seconds=1), True),
        (UnavailableError("database unavailable", reason="DATABASE_UNAVAILABLE"), False),
        (InternalError("boom"), False),
        (UnauthenticatedError("bad key"), False),
        (PermissionDeniedError("the platform role may not call IngestWebhook", reason="ROLE"), False),
        (PermissionDeniedError("only the edge may set source_ip", reason="EDGE_ONLY_FIELD"), False),
    ],
)
async def test_only_refusals_that_would_repeat_settle_a_replay(scripted, error, settled) -> None:
    service, stub = scripted
    assert settles_replay(await _refusal(stub, service, error)) is settled


async def test_replay_sends_in_order_and_stops_at_the_first_unsettled(spool: WebhookSpool, scripted) -> None:
    service, stub = scripted
    for token in ("a", "gone", "b", "c"):
        await spool.append(webhook(token), request_id=token)
    service.errors = {"gone": [NotFoundError("unknown webhook")], "b": [UnavailableError("down")]}
    replayer = SpoolReplayer(spool, lambda request: stub.IngestWebhook(request, timeout=5))

    with pytest.raises(grpc.aio.AioRpcError):
        await replayer.replay_once()
    assert [item.request.webhook_token for item in await spool.oldest(10)] == ["b", "c"]

    assert await replayer.replay_once() == 2
    assert await spool.oldest(10) == []
    tokens = [request.webhook_token for request in service.received]
    assert tokens == ["a", "gone", "b", "b", "c"]
    keys = [request.idempotency_key for request in service.received if request.webhook_token == "b"]
    assert keys[0] == keys[1] != "", "a retried replay carries the same idempotency key"


async def _until_drained(spool: WebhookSpool, *, deadline_seconds: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_seconds
    while loop.time() < deadline:
        if not (await spool.totals()).pending:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"spool not drained after {deadline_seconds} s: {await spool.totals()}")


async def test_the_background_replayer_drains_after_an_outage(spool: WebhookSpool, scripted) -> None:
    service, stub = scripted
    service.errors = {"a": [UnavailableError("down")] * 3}
    for token in ("a", "b"):
        await spool.append(webhook(token), request_id=token)
    replayer = SpoolReplayer(
        spool,
        lambda request: stub.IngestWebhook(request, timeout=5),
        min_backoff_seconds=0.01,
        poll_seconds=0.05,
    )
    replayer.start()
    try:
        await _until_drained(spool, deadline_seconds=20)
    finally:
        await replayer.stop()
    assert [request.webhook_token for request in service.received] == ["a", "a", "a", "a", "b"]


async def test_one_process_replays_at_a_time(tmp_path: Path, scripted) -> None:
    """Edge worker processes share the spool; the host-wide lock elects one replayer."""
    _, stub = scripted
    spools = [WebhookSpool(tmp_path, max_bytes=1 << 20) for _ in range(2)]
    for spool in spools:
        await spool.open()
    replayers = [SpoolReplayer(spool, lambda request: stub.IngestWebhook(request)) for spool in spools]
    try:
        assert replayers[0]._lead()
        assert not replayers[1]._lead()
        await replayers[0].stop()
        assert replayers[1]._lead(), "the lock passes on when its holder stops"
    finally:
        for replayer in replayers:
            await replayer.stop()
        for spool in spools:
            await spool.close()


async def test_a_webhook_getting_through_ends_the_replayers_backoff(spool: WebhookSpool, scripted) -> None:
    """Back from an outage, the spool drains at once, not at the end of a backoff."""
    service, stub = scripted
    service.errors = {"a": [UnavailableError("down")]}
    for token in ("a", "b"):
        await spool.append(webhook(token), request_id=token)
    replayer = SpoolReplayer(
        spool,
        lambda request: stub.IngestWebhook(request, timeout=5),
        min_backoff_seconds=600,
        max_backoff_seconds=600,
        poll_seconds=0.05,
    )
    replayer.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        # What the webhook handler calls for every webhook the signal service took.
        while (await spool.totals()).pending and loop.time() < deadline:
            replayer.signal_service_answered()
            await asyncio.sleep(0.02)
    finally:
        await replayer.stop()
    assert (await spool.totals()).pending == 0, "still backing off"
    assert [request.webhook_token for request in service.received] == ["a", "a", "b"]
