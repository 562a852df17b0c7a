"""The outbox relay's PipelinedRedisBroker calls Dramatiq's private Redis API (the dispatch script, its
argument order, _should_do_maintenance, _max_unpack_size): these tests fail when a Dramatiq release
changes any of it, before a message goes missing in production. pyproject.toml pins the tested range."""

from __future__ import annotations

from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.redis import RedisBroker
from redis.asyncio import Redis

from signal_service.outbox.repository import OutboxEntry
from signal_service.outbox.service import PipelinedRedisBroker

UNPACK_SIZE = 4096


class _RecordingScript:
    """Stands in for a registered Lua script: keeps what it was called with, runs nothing."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, keys: list[str], args: list[Any], client: Any = None) -> None:
        self.calls.append({"keys": keys, "args": list(args)})


class _RecordingPipeline:
    """Stands in for the asyncio client's pipeline: keeps the EVALSHA calls queued on it, sends nothing."""

    def __init__(self) -> None:
        self.scripts: set[Any] = set()
        self.calls: list[dict[str, Any]] = []

    async def __aenter__(self) -> _RecordingPipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> None:
        self.calls.append(
            {"sha": sha, "keys": list(keys_and_args[:numkeys]), "args": list(keys_and_args[numkeys:])}
        )

    async def execute(self) -> list[Any]:
        return [None] * len(self.calls)


class _RecordingClient:
    def __init__(self) -> None:
        self.pipe = _RecordingPipeline()

    def pipeline(self, transaction: bool = True) -> _RecordingPipeline:
        return self.pipe


def _broker(monkeypatch: pytest.MonkeyPatch) -> PipelinedRedisBroker:
    # No connection is made: scripts register lazily and both dispatches are recorded below.
    broker = PipelinedRedisBroker(
        async_client=Redis.from_url("redis://127.0.0.1:1/0"),
        url="redis://127.0.0.1:1/0",
        namespace="contract",
        middleware=[],
        maintenance_chance=0,
    )
    broker._unpack_size = UNPACK_SIZE
    # Dramatiq caches the size on the class: set it only for this test, never ask Redis.
    monkeypatch.setattr(PipelinedRedisBroker, "_max_unpack_size_val", UNPACK_SIZE)
    return broker


def _message() -> dramatiq.Message:
    return dramatiq.Message(
        queue_name="capture_free", actor_name="capture", args=(7,), kwargs={}, options={"request_id": "r"}
    )


def _routing(args: list[Any]) -> list[Any]:
    """The dispatch arguments but the timestamp (args[1]) and the unique id and message (the last two)."""
    return [args[0], *args[2:-2]]


def _decoded(encoded: bytes) -> dict[str, Any]:
    """The message but what differs per enqueue: its ids and when it was sent."""
    message = dramatiq.Message.decode(encoded).asdict()
    message["options"].pop("redis_message_id")
    del message["message_id"], message["message_timestamp"]
    return message


async def test_enqueue_many_sends_what_redis_broker_enqueue_sends(monkeypatch: pytest.MonkeyPatch) -> None:
    broker = _broker(monkeypatch)
    sync_script, client = _RecordingScript(), _RecordingClient()
    broker.scripts["dispatch"] = sync_script
    broker._async_client = client  # type: ignore[assignment]
    message = _message()

    broker.enqueue(message)
    await broker.enqueue_many(
        [OutboxEntry(queue_name="capture_free", actor_name="capture", args=[7], options={"request_id": "r"})]
    )

    (dramatiq_call,) = sync_script.calls
    (relay_call,) = client.pipe.calls
    assert client.pipe.scripts == {broker._dispatch_script}, "the pipeline loads the script if Redis lacks it"
    assert relay_call["sha"] == broker._dispatch_script.sha
    assert relay_call["keys"] == dramatiq_call["keys"] == ["contract"]
    assert _routing(relay_call["args"]) == _routing(dramatiq_call["args"])
    assert _routing(relay_call["args"]) == [
        "enqueue",
        "capture_free",
        broker.broker_id,
        broker.heartbeat_timeout,
        broker.dead_message_ttl,
        0,
        UNPACK_SIZE,
    ]
    relay_id, relay_message = relay_call["args"][-2:]
    dramatiq_id, dramatiq_message = dramatiq_call["args"][-2:]
    assert relay_id != dramatiq_id, "each enqueue has its own redis_message_id"
    assert dramatiq.Message.decode(relay_message).options["redis_message_id"] == relay_id
    assert _decoded(relay_message) == _decoded(dramatiq_message)
    assert dramatiq.Message.decode(relay_message).message_id != message.message_id


def test_a_broker_with_middleware_is_refused() -> None:
    """enqueue_many runs no middleware hook, so a broker given middleware would skip them silently."""
    with pytest.raises(ValueError, match="middleware"):
        PipelinedRedisBroker(
            async_client=Redis.from_url("redis://127.0.0.1:1/0"), url="redis://127.0.0.1:1/0", namespace="x"
        )


def test_the_private_members_the_relay_reads_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    broker = _broker(monkeypatch)
    assert hasattr(broker.scripts["dispatch"], "script"), "the relay registers the dispatch script's source"
    assert isinstance(broker.broker_id, str)
    assert isinstance(broker.heartbeat_timeout, int)
    assert isinstance(broker.dead_message_ttl, int)
    assert broker._should_do_maintenance("enqueue") == 0
    assert RedisBroker._max_unpack_size is not None
