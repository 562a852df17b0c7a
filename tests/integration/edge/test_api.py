"""The edge's REST and SSE API against the real signal service (a real gRPC server on real PostgreSQL).

The edge app runs under a real uvicorn server in the test's event loop (Litestar's test client buffers
whole responses, so it cannot follow an event stream), in front of the in-process signal server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import uvicorn
from google.protobuf import timestamp_pb2

from apidevs.alerts.v1 import resources_pb2, signal_service_pb2, user_service_pb2
from edge.app import create_app
from edge.settings import EdgeSettings
from tests.conftest import settings_from
from tests.keys import SYSTEM_KEYS

GUARD_SECONDS = 30  # a broken stream fails the test instead of hanging it


def alert(index: int, ticker: str = "BINANCE:BTCUSDT") -> bytes:
    return f"Ticker: {ticker}\nPrice: {100 + index}.50\nSignal: buy\nid: {uuid.uuid4()}".encode()


async def ingest(signals, token: str, body: bytes, received_at: datetime | None = None) -> str:
    sent = timestamp_pb2.Timestamp()
    sent.FromDatetime(received_at or datetime.now(UTC))
    answer = await signals.IngestWebhook(
        signal_service_pb2.IngestWebhookRequest(
            webhook_token=token,
            body=body,
            content_type="text/plain",
            source_ip="203.0.113.9",
            received_at=sent,
        )
    )
    return answer.signal_id


async def create_user(users) -> user_service_pb2.CreateUserResponse:
    return await users.CreateUser(user_service_pb2.CreateUserRequest(plan=resources_pb2.PLAN_PREMIUM))


@pytest.fixture(scope="module")
async def edge_url(signal_server: str, service_env: dict[str, str]) -> AsyncIterator[str]:
    """The edge app under a real uvicorn server in this event loop, with a short SSE heartbeat."""
    settings = settings_from(
        service_env, EdgeSettings, signal_addr=signal_server, service_api_key=SYSTEM_KEYS.edge
    )
    app = create_app(settings)
    app.state.sse_heartbeat_seconds = 0.2
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", log_config=None, access_log=False)
    server = uvicorn.Server(config)
    # The test process keeps its own signal handlers (Ctrl-C stops pytest, not just this server).
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    serving = asyncio.create_task(server.serve(), name="platform-api-edge")
    async with asyncio.timeout(GUARD_SECONDS):
        while not server.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.01)
    yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    server.should_exit = True
    await serving


@pytest.fixture(scope="module")
async def client(edge_url: str, service_key: str) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {service_key}"}
    async with httpx.AsyncClient(base_url=edge_url, headers=headers, timeout=GUARD_SECONDS) as http:
        yield http


async def test_stats_as_json(client: httpx.AsyncClient, signals, users) -> None:
    created = await create_user(users)
    won = await ingest(signals, created.webhook_token, alert(1))
    await ingest(signals, created.webhook_token, alert(2))
    await signals.UpdateSignalOutcome(
        signal_service_pb2.UpdateSignalOutcomeRequest(signal_id=won, result=resources_pb2.SIGNAL_RESULT_WIN)
    )
    answer = await client.get(f"/api/users/{created.user.user_id}/stats")
    assert answer.status_code == 200
    assert answer.json() == {
        "user_id": created.user.user_id,
        "total_signals": 2,
        "this_month": 2,
        "screenshots_pending": 2,
        "win_rate": 100.0,
        "wins": 1,
        "losses": 0,
        "storage_bytes": 0,
        "storage_objects": 0,
    }


async def test_signals_list_filters_and_pages(client: httpx.AsyncClient, signals, users) -> None:
    created = await create_user(users)
    user_id, token = created.user.user_id, created.webhook_token
    old = await ingest(signals, token, alert(0), received_at=datetime.now(UTC) - timedelta(days=3))
    ids = [
        await ingest(signals, token, alert(index, "BINANCE:ETHUSDT" if index % 2 else "BINANCE:BTCUSDT"))
        for index in range(1, 6)
    ]

    seen, token_param = [], None
    while True:
        params = {"page_size": 2} | ({"page_token": token_param} if token_param else {})
        page = (await client.get(f"/api/users/{user_id}/signals", params=params)).json()
        seen += [signal["signal_id"] for signal in page["signals"]]
        token_param = page["next_page_token"]
        if token_param is None:
            break
    assert seen == [*reversed(ids), old]

    eth = (await client.get(f"/api/users/{user_id}/signals", params={"ticker": "BINANCE:ETHUSDT"})).json()
    assert [signal["signal_id"] for signal in eth["signals"]] == [ids[4], ids[2], ids[0]]
    since = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    recent = (await client.get(f"/api/users/{user_id}/signals", params={"created_after": since})).json()
    assert old not in [signal["signal_id"] for signal in recent["signals"]]
    assert len(recent["signals"]) == 5

    signal = eth["signals"][0]
    assert signal["ticker"] == "BINANCE:ETHUSDT"
    assert signal["price"] == "105.50"
    assert signal["screenshot_status"] == "pending"
    assert signal["result"] == "pending"
    assert signal["parse_status"] in {"complete", "partial"}
    assert signal["profit_loss"] is None
    assert signal["screenshot_url"] is None
    assert signal["created_at"].endswith("Z")
    assert datetime.fromisoformat(signal["created_at"]) <= datetime.now(UTC)


async def test_bad_list_arguments_are_400(client: httpx.AsyncClient, users) -> None:
    created = await create_user(users)
    url = f"/api/users/{created.user.user_id}/signals"
    for params in (
        {"page_size": 101},
        {"result": "maybe"},
        {"page_token": "not-a-token"},
        {"created_after": "0001-01-01T00:00:00+05:00"},
    ):
        assert (await client.get(url, params=params)).status_code == 400
    assert (await client.get("/api/users/not-a-uuid/signals")).status_code == 400


async def test_get_and_patch_a_signal(client: httpx.AsyncClient, signals, users) -> None:
    created = await create_user(users)
    user_id = created.user.user_id
    signal_id = await ingest(signals, created.webhook_token, alert(7))
    url = f"/api/users/{user_id}/signals/{signal_id}"

    fetched = await client.get(url)
    assert (fetched.status_code, fetched.json()["signal_id"]) == (200, signal_id)

    won = await client.patch(url, json={"result": "win", "profit_loss": "-1.50", "notes": "late exit"})
    assert won.status_code == 200
    assert (won.json()["result"], won.json()["profit_loss"], won.json()["notes"]) == (
        "win",
        "-1.50",
        "late exit",
    )
    notes_only = (await client.patch(url, json={"notes": "revised"})).json()
    assert (notes_only["result"], notes_only["profit_loss"], notes_only["notes"]) == (
        "win",
        "-1.50",
        "revised",
    )
    cleared = (await client.patch(url, json={"result": "pending", "profit_loss": ""})).json()
    assert (cleared["result"], cleared["profit_loss"], cleared["notes"]) == ("pending", None, "revised")

    invalid = await client.patch(url, json={"profit_loss": "twelve"})
    assert (invalid.status_code, invalid.json()["error"]) == (400, "invalid_argument")
    assert (await client.patch(url, json={"result": "maybe"})).status_code == 400


async def test_a_signal_under_another_user_is_not_found(client: httpx.AsyncClient, signals, users) -> None:
    owner, stranger = await create_user(users), await create_user(users)
    signal_id = await ingest(signals, owner.webhook_token, alert(1))
    url = f"/api/users/{stranger.user.user_id}/signals/{signal_id}"
    assert (await client.get(url)).status_code == 404
    assert (await client.patch(url, json={"result": "loss"})).status_code == 404
    unchanged = await signals.GetSignal(signal_service_pb2.GetSignalRequest(signal_id=signal_id))
    assert unchanged.result == resources_pb2.SIGNAL_RESULT_PENDING
    missing = await client.get(f"/api/users/{owner.user.user_id}/signals/{uuid.uuid4()}")
    assert (missing.status_code, missing.json()) == (404, {"success": False, "error": "not_found"})


async def test_missing_or_wrong_bearer_key_is_401(client: httpx.AsyncClient, users) -> None:
    created = await create_user(users)
    url = f"/api/users/{created.user.user_id}/stats"
    for authorization in ("", "Basic dXNlcjpwYXNz", "Bearer", "Bearer wrong-key"):
        answer = await client.get(url, headers={"Authorization": authorization})
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"].startswith("Bearer")


async def test_openapi_documents_the_platform_api(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    for path in ("stats", "signals", "signals/{signal_id}", "events"):
        assert f"/api/users/{{user_id}}/{path}" in schema["paths"]
    assert "patch" in schema["paths"]["/api/users/{user_id}/signals/{signal_id}"]
    assert schema["components"]["securitySchemes"]["BearerApiKey"]["scheme"] == "bearer"
    signal_schema = schema["components"]["schemas"]["SignalOut"]["properties"]
    assert {"signal_id", "price", "profit_loss", "screenshot_url", "result"} <= set(signal_schema)


# --- Server-Sent Events ------------------------------------------------------------------------------


async def read_sse(lines: AsyncIterator[str], count: int) -> tuple[list[dict], list[str]]:
    """`count` events as {"id", "data"} dicts, and the comment lines seen on the way."""
    events: list[dict] = []
    comments: list[str] = []
    current: dict = {}
    async with asyncio.timeout(GUARD_SECONDS):
        async for line in lines:
            if line.startswith(":"):
                comments.append(line[1:].strip())
            elif line.startswith("id: "):
                current["id"] = line[4:]
            elif line.startswith("data: "):
                current["data"] = json.loads(line[6:])
            elif line == "" and "data" in current:
                events.append(current)
                current = {}
                if len(events) == count:
                    break
    return events, comments


async def test_sse_replays_goes_live_and_resumes_from_last_event_id(
    edge_url: str, service_key: str, signals, users
) -> None:
    created = await create_user(users)
    user_id, token = created.user.user_id, created.webhook_token
    ids = [await ingest(signals, token, alert(index)) for index in range(2)]
    headers = {"Authorization": f"Bearer {service_key}"}
    url = f"{edge_url}/api/users/{user_id}/events"
    async with httpx.AsyncClient(timeout=GUARD_SECONDS) as http:
        async with http.stream("GET", url, params={"after": "0"}, headers=headers) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = response.aiter_lines()
            replayed, _ = await read_sse(lines, 2)
            live_id = await ingest(signals, token, alert(5))
            (live,), _ = await read_sse(lines, 1)
        assert [event["id"] for event in replayed] == ["1", "2"]
        assert [event["data"]["signal"]["signal_id"] for event in replayed] == ids
        assert live["id"] == "3"
        assert live["data"]["cursor"] == "3"
        assert live["data"]["type"] == "created"
        assert live["data"]["user_id"] == user_id
        assert live["data"]["signal"]["signal_id"] == live_id

        await signals.UpdateSignalOutcome(
            signal_service_pb2.UpdateSignalOutcomeRequest(
                signal_id=ids[0], result=resources_pb2.SIGNAL_RESULT_LOSS, profit_loss="-4"
            )
        )
        resume_headers = headers | {"Last-Event-ID": "3"}
        # Last-Event-ID wins over ?after=, as EventSource keeps the original URL when it reconnects.
        async with http.stream("GET", url, params={"after": "0"}, headers=resume_headers) as response:
            lines = response.aiter_lines()
            (resumed,), comments = await read_sse(lines, 1)
            heartbeats = await read_comments(lines, 1)
    assert resumed["id"] == "4"
    assert resumed["data"]["type"] == "outcome_updated"
    assert (resumed["data"]["signal"]["result"], resumed["data"]["signal"]["profit_loss"]) == ("loss", "-4")
    assert "stream open" in comments
    assert heartbeats == ["keepalive"]


async def read_comments(lines: AsyncIterator[str], count: int) -> list[str]:
    comments: list[str] = []
    async with asyncio.timeout(GUARD_SECONDS):
        async for line in lines:
            if line.startswith(":"):
                comments.append(line[1:].strip())
                if len(comments) == count:
                    break
    return comments


async def test_sse_refusals_are_http_errors(edge_url: str, service_key: str, users) -> None:
    created = await create_user(users)
    url = f"{edge_url}/api/users/{created.user.user_id}/events"
    auth = {"Authorization": f"Bearer {service_key}"}
    async with httpx.AsyncClient(timeout=GUARD_SECONDS) as http:
        assert (await http.get(url)).status_code == 401
        assert (await http.get(url, headers={"Authorization": "Bearer nope"})).status_code == 401
        assert (await http.get(url, headers=auth, params={"after": "x"})).status_code == 400
        assert (await http.get(url, headers=auth | {"Last-Event-ID": "77"})).status_code == 400
        unknown = await http.get(f"{edge_url}/api/users/{uuid.uuid4()}/events", headers=auth)
        assert unknown.status_code == 404
