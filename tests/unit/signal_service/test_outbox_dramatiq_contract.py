"""The outbox relay's PipelinedRedisBroker calls Dramatiq's private Redis API (the dispatch script, its
argument order, _should_do_maintenance, _max_unpack_size): these tests fail when a Dramatiq release
changes any of it, before a message goes missing in production. pyproject.toml pins the tested range."""

from __future__ import annotations

from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.redis import RedisBroker
from redis.asyncio import Redis

from signal_service.outbox.service import PipelinedRedisBroker

UNPACK_SIZE = 4096


class _RecordingScript:
    """Stands in for a registered Lua script: keeps what it was called with, runs nothing."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, keys: list[str], args: list[Any], client: Any = None) -> None:
        self.calls.append({"keys": keys, "args": list(args)})

    async def run_async(self, keys: list[str], args: list[Any], client: Any = None) -> None:
        self(keys=keys, args=args, client=client)


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
    return dramatiq.Message(queue_name="capture_free", actor_name="capture", args=(7,), kwargs={}, options={})


def _routing(args: list[Any]) -> list[Any]:
    """The dispatch arguments but the timestamp (args[1]) and the unique id and message (the last two)."""
    return [args[0], *args[2:-2]]


def _decoded(encoded: bytes) -> dict[str, Any]:
    message = dramatiq.Message.decode(encoded).asdict()
    message["options"].pop("redis_message_id")
    return message


async def test_enqueue_many_sends_what_redis_broker_enqueue_sends(monkeypatch: pytest.MonkeyPatch) -> None:
    broker = _broker(monkeypatch)
    sync_script, async_script = _RecordingScript(), _RecordingScript()
    broker.scripts["dispatch"] = sync_script
    broker._async_dispatch = async_script.run_async
    message = _message()

    broker.enqueue(message)
    await broker.enqueue_many([message])

    (dramatiq_call,) = sync_script.calls
    (relay_call,) = async_script.calls
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


def test_the_private_members_the_relay_reads_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    broker = _broker(monkeypatch)
    assert hasattr(broker.scripts["dispatch"], "script"), "the relay registers the dispatch script's source"
    assert isinstance(broker.broker_id, str)
    assert isinstance(broker.heartbeat_timeout, int)
    assert isinstance(broker.dead_message_ttl, int)
    assert broker._should_do_maintenance("enqueue") == 0
    assert RedisBroker._max_unpack_size is not None
