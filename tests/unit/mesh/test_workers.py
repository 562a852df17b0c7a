"""mesh.workers, the job services' worker runtime, on real Dramatiq workers over a StubBroker."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import dramatiq
import pytest
from dramatiq.broker import Broker, MessageProxy
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage, Middleware, Retries, SkipMessage, TimeLimit

from mesh.settings import WorkerSettings
from mesh.workers import AfterMessage, WorkerLifecycle, create_redis_broker, event_loop


class Runner:
    """Records what happened to it and on which event loop it started."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self.events.append("start")
        self.loop = asyncio.get_running_loop()

    async def close(self) -> None:
        self.events.append("close")


class Ended(AfterMessage):
    def __init__(self) -> None:
        self.ended: list[tuple[str, type[BaseException] | None]] = []

    def after_message(self, broker: Broker, message: MessageProxy, exception: BaseException | None) -> None:
        self.ended.append((message.actor_name, type(exception) if exception else None))


class SkipNamed(Middleware):
    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        if message.actor_name == "skipped":
            raise SkipMessage()


@pytest.fixture
def runner() -> Runner:
    return Runner()


@pytest.fixture
def ended() -> Ended:
    return Ended()


@pytest.fixture
def broker(runner: Runner, ended: Ended) -> Iterator[StubBroker]:
    broker = StubBroker(middleware=[ended, SkipNamed(), WorkerLifecycle(runner)])
    broker.emit_after("process_boot")
    yield broker
    broker.close()


def _run(broker: StubBroker, send: list[dramatiq.Actor[..., object]]) -> None:
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        for actor in send:
            actor.send()
        broker.join("jobs", fail_fast=False)
        worker.join()
    finally:
        worker.stop()


def test_the_runner_lives_on_the_actors_event_loop_from_boot_to_shutdown(
    broker: StubBroker, runner: Runner
) -> None:
    seen: list[tuple[list[str], bool]] = []

    @dramatiq.actor(broker=broker, queue_name="jobs")
    async def job() -> None:
        seen.append((list(runner.events), asyncio.get_running_loop() is runner.loop))

    _run(broker, [job])
    assert seen == [(["start"], True)]
    assert runner.events == ["start", "close"]
    with pytest.raises(RuntimeError, match="not running"):
        event_loop()


def test_after_message_sees_every_message_ran_failed_or_skipped(broker: StubBroker, ended: Ended) -> None:
    @dramatiq.actor(broker=broker, queue_name="jobs")
    def ran() -> None:
        pass

    @dramatiq.actor(broker=broker, queue_name="jobs")
    def failed() -> None:
        raise ValueError("no")

    @dramatiq.actor(broker=broker, queue_name="jobs")
    def skipped() -> None:
        raise AssertionError("a skipped message never runs")

    _run(broker, [ran, failed, skipped])
    assert sorted(ended.ended, key=lambda entry: entry[0]) == [
        ("failed", ValueError),
        ("ran", None),
        ("skipped", None),
    ]


def test_the_broker_runs_the_service_middleware_before_the_time_limit_and_retries() -> None:
    settings = WorkerSettings(redis_url="redis://127.0.0.1:1/0", redis_namespace="ns")
    first, second = Middleware(), Middleware()
    broker = create_redis_broker(
        settings,
        middleware=[first, second],
        time_limit_ms=5_000,
        max_retries=2,
        min_backoff_ms=1,
        max_backoff_ms=9,
    )
    try:
        assert broker.middleware[:2] == [first, second]
        assert [type(middleware) for middleware in broker.middleware[2:]] == [
            TimeLimit,
            Retries,
            CurrentMessage,
        ]
        time_limit, retries = broker.middleware[2], broker.middleware[3]
        assert (time_limit.time_limit, retries.max_retries, retries.min_backoff, retries.max_backoff) == (
            5_000,
            2,
            1,
            9,
        )
        assert broker.namespace == "ns:dramatiq"
    finally:
        broker.close()


def test_a_broker_without_redis_is_refused() -> None:
    with pytest.raises(RuntimeError, match="ALERTS_REDIS_URL"):
        create_redis_broker(
            WorkerSettings(redis_url=""),
            middleware=[],
            time_limit_ms=1,
            max_retries=0,
            min_backoff_ms=1,
            max_backoff_ms=1,
        )
