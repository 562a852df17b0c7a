"""SubscribeSignals across replicas: two `alerts serve signal` processes on one database, a subscriber on
one, writes through the other, and a real `alerts serve edge` in front of one of them for REST and SSE.

Both processes accept, next to the platform key, a key scoped to one user and configured hashed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest

from alerts.processes import ManagedProcess, alerts_argv, free_port, grpc_serving, http_ok
from apidevs.alerts.v1 import (
    api_key_service_pb2,
    api_key_service_pb2_grpc,
    resources_pb2,
    signal_service_pb2,
    signal_service_pb2_grpc,
    user_service_pb2,
    user_service_pb2_grpc,
)
from mesh.auth import generate_key, hash_key
from mesh.errors import from_rpc_error
from mesh.grpc import open_channel
from tests.e2e.stacks import START_TIMEOUT_SECONDS, child_env
from tests.keys import SYSTEM_KEYS, open_system_channel
from tests.support import ingest_request

pytestmark = pytest.mark.e2e

GUARD_SECONDS = 60  # a broken stream fails the test instead of hanging it
STREAMS_PER_USER = 3
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "platform_client.py"
CREATED = resources_pb2.SIGNAL_EVENT_TYPE_CREATED
OUTCOME = resources_pb2.SIGNAL_EVENT_TYPE_OUTCOME_UPDATED


def alert(index: int) -> bytes:
    return f"Ticker: BINANCE:SOLUSDT\nPrice: {index}.5\nSignal: sell\nid: {uuid.uuid4()}".encode()


@dataclass(frozen=True)
class Accounts:
    scoped: user_service_pb2.CreateUserResponse
    other: user_service_pb2.CreateUserResponse
    scoped_key: str


@dataclass(frozen=True)
class Replicas:
    a: str
    b: str
    # An edge process whose signal service is replica b.
    edge_url: str


@pytest.fixture(scope="module")
async def users(signal_server: str, service_key: str) -> AsyncIterator[user_service_pb2_grpc.UserServiceStub]:
    async with open_channel(signal_server, service_key) as channel:
        yield user_service_pb2_grpc.UserServiceStub(channel)


async def create_user(users: user_service_pb2_grpc.UserServiceStub) -> user_service_pb2.CreateUserResponse:
    return await users.CreateUser(user_service_pb2.CreateUserRequest(plan=resources_pb2.PLAN_PREMIUM))


@pytest.fixture(scope="module")
async def accounts(users: user_service_pb2_grpc.UserServiceStub) -> Accounts:
    return Accounts(
        scoped=await create_user(users), other=await create_user(users), scoped_key=generate_key()
    )


@pytest.fixture(scope="module")
def replicas(
    accounts: Accounts,
    service_env: dict[str, str],
    service_key: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Replicas]:
    logs = tmp_path_factory.mktemp("stream-replicas")
    scoped_entry = f"sha256:{hash_key(accounts.scoped_key)}@user:{accounts.scoped.user.user_id}"
    keys = ",".join([*SYSTEM_KEYS.entries(), scoped_entry])
    a, b = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    edge_port = free_port()
    unused_storage = f"127.0.0.1:{free_port()}"
    processes = [
        ManagedProcess(
            f"signal-{name}",
            alerts_argv("serve", "signal"),
            child_env(
                service_env,
                ALERTS_SIGNAL_ADDR=address,
                ALERTS_API_KEYS=keys,
                ALERTS_STORAGE_ADDR=unused_storage,
                ALERTS_STREAM_MAX_PER_USER=str(STREAMS_PER_USER),
            ),
            ready=lambda address=address: grpc_serving(address),
            log_path=logs / f"signal-{name}.log",
        )
        for name, address in (("a", a), ("b", b))
    ]
    processes.append(
        ManagedProcess(
            "edge",
            alerts_argv("serve", "edge"),
            child_env(
                service_env,
                ALERTS_SERVICE_API_KEY=SYSTEM_KEYS.edge,
                ALERTS_SIGNAL_ADDR=b,
                ALERTS_STORAGE_ADDR=unused_storage,
                ALERTS_EDGE_HOST="127.0.0.1",
                ALERTS_EDGE_PORT=str(edge_port),
                ALERTS_DATA_DIR=str(logs / "edge-data"),
            ),
            ready=lambda: http_ok(f"http://127.0.0.1:{edge_port}/health/live"),
            log_path=logs / "edge.log",
        )
    )
    try:
        for process in processes:
            process.start()
        for process in processes:
            process.wait_ready(START_TIMEOUT_SECONDS)
        yield Replicas(a=a, b=b, edge_url=f"http://127.0.0.1:{edge_port}")
    finally:
        for process in reversed(processes):
            process.stop()
        for path in sorted(Path(logs).glob("*.log")):
            print(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}")


@pytest.fixture(scope="module")
async def stubs(replicas: Replicas) -> AsyncIterator[dict[str, signal_service_pb2_grpc.SignalServiceStub]]:
    async with open_system_channel(replicas.a) as on_a, open_system_channel(replicas.b) as on_b:
        yield {
            "a": signal_service_pb2_grpc.SignalServiceStub(on_a),
            "b": signal_service_pb2_grpc.SignalServiceStub(on_b),
        }


class Writer:
    """Writes one user's events through one replica, in sequence, remembering what each event will be."""

    def __init__(self, stub: signal_service_pb2_grpc.SignalServiceStub, token: str) -> None:
        self.stub = stub
        self.token = token
        self.expected: list[tuple[int, str]] = []

    async def ingest(self) -> str:
        answer = await self.stub.IngestWebhook(ingest_request(self.token, alert(len(self.expected))))
        self.expected.append((CREATED, answer.signal_id))
        return answer.signal_id

    async def outcome(self, signal_id: str, result: int, profit_loss: str) -> None:
        await self.stub.UpdateSignalOutcome(
            signal_service_pb2.UpdateSignalOutcomeRequest(
                signal_id=signal_id, result=result, profit_loss=profit_loss
            )
        )
        self.expected.append((OUTCOME, signal_id))

    async def run(self, writes: int) -> None:
        """Alternates new signals and outcomes on the signal before."""
        previous = ""
        for index in range(writes):
            if index % 3 == 2:
                await self.outcome(previous, resources_pb2.SIGNAL_RESULT_WIN, f"{index}.25")
            else:
                previous = await self.ingest()


async def head_cursor(call: grpc.aio.UnaryStreamCall) -> str:
    return dict(await call.initial_metadata())["x-start-cursor"]


async def test_writes_on_one_replica_reach_a_subscriber_on_the_other_in_order(
    stubs: dict[str, signal_service_pb2_grpc.SignalServiceStub], users
) -> None:
    user = await create_user(users)
    writer = Writer(stubs["a"], user.webhook_token)
    call = stubs["b"].SubscribeSignals(signal_service_pb2.SubscribeSignalsRequest(user_id=user.user.user_id))
    try:
        assert await head_cursor(call) == "0"
        await writer.run(9)
        received = []
        async with asyncio.timeout(GUARD_SECONDS):
            while len(received) < len(writer.expected):
                received.append(await call.read())
    finally:
        call.cancel()
    assert [event.cursor for event in received] == [str(seq) for seq in range(1, 10)]
    assert [(event.type, event.signal.signal_id) for event in received] == writer.expected
    last_outcome = received[-1]
    assert (last_outcome.signal.result, last_outcome.signal.profit_loss) == (
        resources_pb2.SIGNAL_RESULT_WIN,
        "8.25",
    )


async def test_disconnect_and_resume_loses_nothing_and_repeats_nothing(
    stubs: dict[str, signal_service_pb2_grpc.SignalServiceStub], users
) -> None:
    """The reader hangs up after a few events each time and resumes from its last cursor, alternating
    replicas, while the writer keeps committing through replica a."""
    user = await create_user(users)
    writer = Writer(stubs["a"], user.webhook_token)
    writes = 45
    writing = asyncio.create_task(writer.run(writes))
    picker = random.Random(6)
    received: list[resources_pb2.SignalEvent] = []
    reconnects = 0
    async with asyncio.timeout(GUARD_SECONDS):
        while len(received) < writes:
            replica = "ab"[reconnects % 2]
            cursor = received[-1].cursor if received else "0"
            call = stubs[replica].SubscribeSignals(
                signal_service_pb2.SubscribeSignalsRequest(user_id=user.user.user_id, after_cursor=cursor)
            )
            try:
                for _ in range(picker.randint(1, 7)):
                    if len(received) == writes:
                        break
                    received.append(await call.read())
            finally:
                call.cancel()
            reconnects += 1
        await writing
    assert reconnects > 5
    assert [event.cursor for event in received] == [str(seq) for seq in range(1, writes + 1)]
    assert [(event.type, event.signal.signal_id) for event in received] == writer.expected


async def test_scoped_key_sees_only_its_user_on_every_replica(
    replicas: Replicas, accounts: Accounts, stubs: dict[str, signal_service_pb2_grpc.SignalServiceStub]
) -> None:
    for address in (replicas.a, replicas.b):
        async with open_channel(address, accounts.scoped_key) as channel:
            scoped = signal_service_pb2_grpc.SignalServiceStub(channel)
            own = scoped.SubscribeSignals(
                signal_service_pb2.SubscribeSignalsRequest(user_id=accounts.scoped.user.user_id)
            )
            try:
                assert (await head_cursor(own)).isdigit()
            finally:
                own.cancel()
            foreign = scoped.SubscribeSignals(
                signal_service_pb2.SubscribeSignalsRequest(user_id=accounts.other.user.user_id)
            )
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await foreign.read()
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await scoped.GetUserStats(
                    signal_service_pb2.GetUserStatsRequest(user_id=accounts.other.user.user_id)
                )
            assert from_rpc_error(caught.value).code == grpc.StatusCode.NOT_FOUND


async def sse_events(lines: AsyncIterator[str], count: int) -> list[dict]:
    events: list[dict] = []
    current: dict = {}
    async with asyncio.timeout(GUARD_SECONDS):
        async for line in lines:
            if line.startswith("id: "):
                current["id"] = line[4:]
            elif line.startswith("data: "):
                current["data"] = json.loads(line[6:])
            elif line == "" and "data" in current:
                events.append(current)
                current = {}
                if len(events) == count:
                    break
    return events


async def test_rest_and_sse_through_the_real_edge_with_a_scoped_key(
    replicas: Replicas, accounts: Accounts, stubs: dict[str, signal_service_pb2_grpc.SignalServiceStub]
) -> None:
    own_id, other_id = accounts.scoped.user.user_id, accounts.other.user.user_id
    base = f"{replicas.edge_url}/api/users"
    scoped = {"Authorization": f"Bearer {accounts.scoped_key}"}
    writer = Writer(stubs["a"], accounts.scoped.webhook_token)
    async with httpx.AsyncClient(timeout=GUARD_SECONDS, headers=scoped) as http:
        head = (await http.get(f"{base}/{own_id}/stats")).json()["total_signals"]
        first = await writer.ingest()
        await writer.ingest()

        stats = await http.get(f"{base}/{own_id}/stats")
        assert (stats.status_code, stats.json()["total_signals"]) == (200, head + 2)
        # Another user's answers are a random id's: 404, the same body.
        for path in ("stats", "signals"):
            foreign = await http.get(f"{base}/{other_id}/{path}")
            unknown = await http.get(f"{base}/{uuid.uuid4()}/{path}")
            assert (foreign.status_code, foreign.json()) == (unknown.status_code, unknown.json())
            assert foreign.status_code == 404
        listed = (await http.get(f"{base}/{own_id}/signals", params={"page_size": 2})).json()
        assert listed["signals"][1]["signal_id"] == first

        async with http.stream("GET", f"{base}/{own_id}/events") as stream:
            assert stream.status_code == 200
            lines = stream.aiter_lines()
            # A user-scoped key reads only: the platform records the outcome, the stream carries it.
            refused = await http.patch(
                f"{base}/{own_id}/signals/{first}", json={"result": "loss", "profit_loss": "-2"}
            )
            assert refused.status_code == 403, refused.text
            await writer.outcome(first, resources_pb2.SIGNAL_RESULT_LOSS, "-2")
            third = await writer.ingest()
            outcome, created = await sse_events(lines, 2)
        assert (outcome["data"]["type"], outcome["data"]["signal"]["signal_id"]) == ("outcome_updated", first)
        assert (created["data"]["type"], created["data"]["signal"]["signal_id"]) == ("created", third)
        assert int(created["id"]) == int(outcome["id"]) + 1

        # A browser reconnecting sends the last id it saw; a write made while it was away is replayed.
        missed = await writer.ingest()
        resume = {"Last-Event-ID": outcome["id"]}
        async with http.stream("GET", f"{base}/{own_id}/events", headers=resume) as stream:
            replayed = await sse_events(stream.aiter_lines(), 2)
        assert [event["data"]["signal"]["signal_id"] for event in replayed] == [third, missed]
        assert (await http.get(f"{base}/{other_id}/events")).status_code == 404


async def test_open_streams_are_capped_per_user_over_sse_and_grpc(
    replicas: Replicas, accounts: Accounts, service_key: str
) -> None:
    own_id = accounts.scoped.user.user_id
    url = f"{replicas.edge_url}/api/users/{own_id}/events"
    scoped = {"Authorization": f"Bearer {accounts.scoped_key}"}
    async with contextlib.AsyncExitStack() as streams, httpx.AsyncClient(timeout=GUARD_SECONDS) as http:
        for _ in range(STREAMS_PER_USER):
            opened = await streams.enter_async_context(http.stream("GET", url, headers=scoped))
            assert opened.status_code == 200
        over = await http.get(url, headers=scoped)
        assert (over.status_code, over.json()["error"]) == (429, "too_many_streams")
        # The limit is the user's, whichever key asks: the platform's key is refused too.
        async with open_channel(replicas.b, service_key) as channel:
            call = signal_service_pb2_grpc.SignalServiceStub(channel).SubscribeSignals(
                signal_service_pb2.SubscribeSignalsRequest(user_id=own_id)
            )
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call.read()
        error = from_rpc_error(caught.value)
        assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_STREAMS")
    # Closed streams give their places back (the edge cancels its call once the browser is gone).
    async with httpx.AsyncClient(timeout=GUARD_SECONDS) as http, asyncio.timeout(GUARD_SECONDS):
        while True:
            async with http.stream("GET", url, headers=scoped) as again:
                if again.status_code == 200:
                    break
                assert again.status_code == 429
            await asyncio.sleep(0.2)


async def run_example(*args: str) -> list[str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=child_env({}),
    )
    async with asyncio.timeout(GUARD_SECONDS):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode().splitlines()


async def test_example_client_lists_follows_and_resumes_from_its_cursor_file(
    replicas: Replicas,
    service_key: str,
    stubs: dict[str, signal_service_pb2_grpc.SignalServiceStub],
    users,
    tmp_path,
) -> None:
    user = await create_user(users)
    writer = Writer(stubs["a"], user.webhook_token)
    listed_id = await writer.ingest()
    cursor_file = tmp_path / "cursor"
    common = [
        "--addr",
        replicas.b,
        "--key",
        service_key,
        "--user",
        user.user.user_id,
        "--cursor-file",
        str(cursor_file),
    ]
    await writer.run(7)  # events 2..8: five more signals and two outcomes

    first = await run_example(*common, "--after", "0", "--max-events", "3")
    assert first[0].startswith(f"signal {writer.expected[-1][1]}")  # the newest signal, listed first
    assert any(line.startswith(f"signal {listed_id}") for line in first)
    assert [line.split()[1] for line in first if line.startswith("event")] == ["1", "2", "3"]
    assert cursor_file.read_text() == "3"

    second = await run_example(*common, "--list", "0", "--max-events", "3")
    assert [line.split()[1] for line in second] == ["4", "5", "6"]
    assert cursor_file.read_text() == "6"


async def holds_within(check, seconds: float) -> bool:
    """Whether `check()` answers True before `seconds` pass; polled, not timed."""
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.1)
    return False


async def test_an_access_token_reads_on_every_replica_writes_nothing_and_is_revoked_everywhere(
    replicas: Replicas, stubs: dict[str, signal_service_pb2_grpc.SignalServiceStub], users
) -> None:
    user = await create_user(users)
    signal_id = (await stubs["a"].IngestWebhook(ingest_request(user.webhook_token, alert(1)))).signal_id
    async with open_system_channel(replicas.a) as on_a:
        accounts_on_a = user_service_pb2_grpc.UserServiceStub(on_a)
        issued = await accounts_on_a.CreateAccessToken(
            user_service_pb2.CreateAccessTokenRequest(user_id=user.user.user_id, ttl_seconds=600)
        )
        token = issued.access_token
        list_request = signal_service_pb2.ListSignalsRequest(user_id=user.user.user_id)
        async with open_channel(replicas.b, token) as as_viewer, httpx.AsyncClient(timeout=10) as client:
            viewer_on_b = signal_service_pb2_grpc.SignalServiceStub(as_viewer)
            listed = await viewer_on_b.ListSignals(list_request)
            assert [row.signal_id for row in listed.signals] == [signal_id]
            signals_url = f"{replicas.edge_url}/api/users/{user.user.user_id}/signals"
            bearer = {"Authorization": f"Bearer {token}"}
            assert (await client.get(signals_url, headers=bearer)).status_code == 200

            with pytest.raises(grpc.aio.AioRpcError) as write:
                await viewer_on_b.UpdateSignalOutcome(
                    signal_service_pb2.UpdateSignalOutcomeRequest(
                        signal_id=signal_id, result=resources_pb2.SIGNAL_RESULT_WIN
                    )
                )
            assert write.value.code() == grpc.StatusCode.PERMISSION_DENIED
            patched = await client.patch(f"{signals_url}/{signal_id}", json={"result": "win"}, headers=bearer)
            assert patched.status_code == 403, patched.text
            with pytest.raises(grpc.aio.AioRpcError) as other_user:
                await viewer_on_b.ListSignals(
                    signal_service_pb2.ListSignalsRequest(user_id=str(uuid.uuid4()))
                )
            # Another user answers like an unknown one (issue 19).
            assert other_user.value.code() == grpc.StatusCode.NOT_FOUND

            await accounts_on_a.RevokeAccessTokens(
                user_service_pb2.RevokeAccessTokensRequest(user_id=user.user.user_id)
            )

            async def refused_on_b() -> bool:
                try:
                    await viewer_on_b.ListSignals(list_request)
                except grpc.aio.AioRpcError as exc:
                    if exc.code() != grpc.StatusCode.UNAUTHENTICATED:
                        raise
                    return True
                return False

            assert await holds_within(refused_on_b, 5.0)
            assert (await client.get(signals_url, headers=bearer)).status_code == 401
            # The replica that revoked refuses from its answer on.
            async with open_channel(replicas.a, token) as as_viewer_on_a:
                with pytest.raises(grpc.aio.AioRpcError) as on_a_refused:
                    await signal_service_pb2_grpc.SignalServiceStub(as_viewer_on_a).ListSignals(list_request)
                assert on_a_refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

            # A token issued after the revocation works.
            fresh = await accounts_on_a.CreateAccessToken(
                user_service_pb2.CreateAccessTokenRequest(user_id=user.user.user_id)
            )
            fresh_bearer = {"Authorization": f"Bearer {fresh.access_token}"}
            assert (await client.get(signals_url, headers=fresh_bearer)).status_code == 200


async def test_a_runtime_api_key_works_on_every_replica_until_revoked_everywhere(
    replicas: Replicas, users
) -> None:
    user = await create_user(users)
    async with open_system_channel(replicas.a) as on_a:
        keys_on_a = api_key_service_pb2_grpc.ApiKeyServiceStub(on_a)
        created = await keys_on_a.CreateApiKey(
            api_key_service_pb2.CreateApiKeyRequest(
                role=api_key_service_pb2.API_KEY_ROLE_USER, name="trader's proxy", user_id=user.user.user_id
            )
        )
        listed = await keys_on_a.ListApiKeys(api_key_service_pb2.ListApiKeysRequest())
        assert created.api_key.key_id in {key.key_id for key in listed.api_keys}
        assert all(created.key not in str(key) for key in listed.api_keys)

        stats_request = signal_service_pb2.GetUserStatsRequest(user_id=user.user.user_id)
        async with (
            open_channel(replicas.a, created.key) as key_on_a,
            open_channel(replicas.b, created.key) as key_on_b,
        ):
            on_each = [signal_service_pb2_grpc.SignalServiceStub(channel) for channel in (key_on_a, key_on_b)]

            async def accepted_everywhere() -> bool:
                try:
                    for stub in on_each:
                        await stub.GetUserStats(stats_request)
                except grpc.aio.AioRpcError as exc:
                    if exc.code() != grpc.StatusCode.UNAUTHENTICATED:
                        raise
                    return False
                return True

            # Replica b learns of the new key within its refresh interval too.
            assert await holds_within(accepted_everywhere, 5.0)

            revoked = await keys_on_a.RevokeApiKey(
                api_key_service_pb2.RevokeApiKeyRequest(key_id=created.api_key.key_id)
            )
            assert revoked.HasField("revoked_at")

            async def refused_everywhere() -> bool:
                for stub in on_each:
                    try:
                        await stub.GetUserStats(stats_request)
                    except grpc.aio.AioRpcError as exc:
                        if exc.code() != grpc.StatusCode.UNAUTHENTICATED:
                            raise
                        continue
                    return False
                return True

            assert await holds_within(refused_everywhere, 5.0)


async def test_a_stream_opened_with_a_token_delivers_nothing_once_the_token_is_revoked(
    replicas: Replicas, stubs: dict[str, signal_service_pb2_grpc.SignalServiceStub], users
) -> None:
    user = await create_user(users)
    async with open_system_channel(replicas.a) as on_a:
        accounts_on_a = user_service_pb2_grpc.UserServiceStub(on_a)
        token = (
            await accounts_on_a.CreateAccessToken(
                user_service_pb2.CreateAccessTokenRequest(user_id=user.user.user_id)
            )
        ).access_token
        async with open_channel(replicas.b, token) as as_viewer:
            call = signal_service_pb2_grpc.SignalServiceStub(as_viewer).SubscribeSignals(
                signal_service_pb2.SubscribeSignalsRequest(user_id=user.user.user_id)
            )
            try:
                await head_cursor(call)
                first = await stubs["a"].IngestWebhook(ingest_request(user.webhook_token, alert(1)))
                async with asyncio.timeout(GUARD_SECONDS):
                    assert (await call.read()).signal.signal_id == first.signal_id

                await accounts_on_a.RevokeAccessTokens(
                    user_service_pb2.RevokeAccessTokensRequest(user_id=user.user.user_id)
                )

                async def stream_ended() -> bool:
                    # Each new event makes replica b look at the token again.
                    await stubs["a"].IngestWebhook(ingest_request(user.webhook_token, alert(2)))
                    try:
                        async with asyncio.timeout(1.0):
                            await call.read()
                    except TimeoutError:
                        return False
                    except grpc.aio.AioRpcError as exc:
                        return exc.code() == grpc.StatusCode.UNAUTHENTICATED
                    # Until replica b has read the revocation, events still arrive.
                    return False

                assert await holds_within(stream_ended, 5.0)
            finally:
                call.cancel()
