"""JobClock publishes the start of the oldest running job from real Dramatiq worker threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from prometheus_client import REGISTRY

from capture_service.liveness import JobClock, beat


def oldest_job_started() -> float | None:
    return REGISTRY.get_sample_value("alerts_capture_oldest_job_started_timestamp_seconds")


@pytest.fixture
def broker() -> Iterator[StubBroker]:
    broker = StubBroker(middleware=[JobClock()])
    broker.emit_after("process_boot")
    yield broker
    broker.close()


def test_a_running_job_is_published_until_it_ends(broker: StubBroker) -> None:
    started, release = threading.Event(), threading.Event()

    @dramatiq.actor(broker=broker, queue_name="liveness")
    def blocked() -> None:
        started.set()
        release.wait(30)

    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        before = time.time()
        blocked.send()
        assert started.wait(30)
        assert before <= oldest_job_started() <= time.time()
        release.set()
        broker.join("liveness")
        worker.join()
        assert oldest_job_started() == 0
    finally:
        release.set()
        worker.stop()


def test_the_oldest_of_several_jobs_is_published(broker: StubBroker) -> None:
    first_started, second_started, release = threading.Event(), threading.Event(), threading.Event()

    @dramatiq.actor(broker=broker, queue_name="liveness")
    def blocked(which: int) -> None:
        (first_started if which == 1 else second_started).set()
        release.wait(30)

    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        blocked.send(1)
        assert first_started.wait(30)
        first = oldest_job_started()
        blocked.send(2)
        assert second_started.wait(30)
        assert oldest_job_started() == first
    finally:
        release.set()
        broker.join("liveness")
        worker.stop()


def test_a_failed_job_is_cleared_too(broker: StubBroker) -> None:
    ran = threading.Event()

    @dramatiq.actor(broker=broker, queue_name="liveness")
    def failing() -> None:
        ran.set()
        raise RuntimeError("boom")

    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        failing.send()
        broker.join("liveness")
        worker.join()
        assert ran.is_set()
        assert oldest_job_started() == 0
    finally:
        worker.stop()


def test_beat_records_now() -> None:
    before = time.time()
    beat()
    assert before <= REGISTRY.get_sample_value("alerts_capture_heartbeat_timestamp_seconds") <= time.time()
