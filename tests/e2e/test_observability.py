"""Issue 10's done-when: after a webhook-to-screenshot run through the whole system as real processes
(`alerts.dev.DevStack` on the machine's PostgreSQL and Redis), every metric the alert rules and the dashboard
read has a non-zero sample on some process's /metrics, and the webhook's request id appears in the JSON
logs of the edge, the signal service, the capture worker and the storage service.

Metrics that are zero in a happy run are provoked the cheap way: a chart that hangs keeps a job in
progress, a killed Chromium is relaunched, an open SubscribeSignals stream is a subscriber, a stopped
worker leaves a job queued, a stopped signal service makes the edge spool, and a postponed outbox row
(what the relay writes when Redis refuses a message) is a backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc
import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from alerts.dev import DevStack
from alerts.processes import free_port, http_ok
from apidevs.alerts.v1 import (
    resources_pb2,
    signal_service_pb2,
    signal_service_pb2_grpc,
    user_service_pb2,
    user_service_pb2_grpc,
)
from mesh.settings import CommonSettings
from tests.e2e.stacks import fresh_database
from tests.support import SAMPLE

pytestmark = pytest.mark.e2e

DEADLINE_SECONDS = 90.0
CHART_ID = "obsLayout"
# The hung attempt gives up after this long; an ordinary capture of the stub takes about a second.
CAPTURE_TIMEOUT_SECONDS = 6

# What deploy/prometheus/alerts.yml and deploy/grafana/dashboard.json read, and the batching histograms, as
# the sample that must be non-zero somewhere (histograms by their _count) and the labels it must carry.
REQUIRED_SAMPLES: dict[str, dict[str, str]] = {
    "alerts_webhooks_total": {"status": "200", "reason": "accepted"},
    "alerts_webhook_latency_seconds_count": {},
    "alerts_grpc_server_handled_total": {"method": "BatchIngestWebhooks", "code": "OK"},
    "alerts_grpc_server_latency_seconds_count": {"method": "BatchIngestWebhooks"},
    "alerts_webhook_batch_size_count": {},
    "alerts_ingest_batch_size_count": {},
    "alerts_queue_length": {"queue": "capture.premium"},
    "alerts_jobs_in_progress": {},
    "alerts_active_workers": {},
    "alerts_capture_duration_seconds_count": {},
    "alerts_captures_total": {"outcome": "success"},
    "alerts_browser_relaunches_total": {},
    "alerts_outbox_backlog": {},
    "alerts_spool_bytes": {},
    "alerts_spool_pending": {},
    "alerts_storage_bytes_written_total": {},
    "alerts_stream_subscribers": {},
    "alerts_db_query_latency_seconds_count": {},
}


@dataclass(frozen=True)
class Sample:
    process: str
    name: str
    labels: dict[str, str]
    value: float


@dataclass
class Scrapes:
    """Every sample seen so far, from every process."""

    samples: list[Sample] = field(default_factory=list)

    def add(self, samples: list[Sample]) -> None:
        self.samples.extend(samples)

    def nonzero(self, name: str, labels: dict[str, str]) -> list[Sample]:
        return [
            sample
            for sample in self.samples
            if sample.name == name and labels.items() <= sample.labels.items() and sample.value > 0
        ]


def scrape(process: str, url: str) -> list[Sample]:
    answer = httpx.get(url, timeout=5.0)
    answer.raise_for_status()
    return [
        Sample(process, sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
        if sample.name.startswith("alerts_")
    ]


def metric_value(process: str, url: str, name: str, **labels: str) -> float:
    found = [
        sample.value
        for sample in scrape(process, url)
        if sample.name == name and labels.items() <= sample.labels.items()
    ]
    return max(found, default=0.0)


def wait_until(what: str, condition: Callable[[], bool], deadline_seconds: float = DEADLINE_SECONDS) -> None:
    deadline = time.monotonic() + deadline_seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {deadline_seconds:.0f} s")
        time.sleep(0.1)


def alert_body(index: int) -> bytes:
    """The sample alert at a price of its own, so that no two are duplicates."""
    return SAMPLE.replace(b"67,890.50", f"67,{index:03d}.25".encode())


@dataclass
class System:
    stack: DevStack
    api_key: str
    signals: signal_service_pb2_grpc.SignalServiceStub
    users: user_service_pb2_grpc.UserServiceStub

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.api_key}"),)

    @property
    def chart_stub_url(self) -> str:
        return self.stack.env["ALERTS_TRADINGVIEW_URL"]

    def metrics_url(self, process: str) -> str:
        return self.stack.metrics_urls[process]

    def post_webhook(self, token: str, index: int) -> httpx.Response:
        return httpx.post(
            f"{self.stack.edge_url}/webhook/u/{token}",
            params={"chart": CHART_ID},
            content=alert_body(index),
            headers={"content-type": "text/plain"},
            timeout=10.0,
        )

    def screenshot_status(self, signal_id: str) -> int:
        answer = self.signals.GetSignal(
            signal_service_pb2.GetSignalRequest(signal_id=signal_id), metadata=self.metadata, timeout=5.0
        )
        return answer.screenshot_status

    def wait_captured(self, signal_id: str) -> None:
        wait_until(
            f"screenshot of {signal_id} COMPLETED",
            lambda: self.screenshot_status(signal_id) == resources_pb2.SCREENSHOT_STATUS_COMPLETED,
        )

    def set_chart_mode(self, mode: str) -> None:
        httpx.post(f"{self.chart_stub_url}/_stub/mode", json={"mode": mode}, timeout=5.0).raise_for_status()

    def log_lines(self, process: str) -> list[dict[str, object]]:
        lines = []
        for line in (self.stack.log_dir / f"{process}.log").read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    lines.append(entry)
        return lines


@pytest.fixture
def system(database_url: str, redis_url: str, service_key: str, tmp_path: Path) -> Iterator[System]:
    extra_env = {
        "ALERTS_REDIS_NAMESPACE": f"obs-{uuid.uuid4().hex[:10]}",
        "ALERTS_LOG_LEVEL": "INFO",
        "ALERTS_CAPTURE_TIMEOUT_SECONDS": str(CAPTURE_TIMEOUT_SECONDS),
        "ALERTS_CAPTURE_MIN_BACKOFF_MS": "500",
    }
    with fresh_database(database_url) as own_database:
        settings = CommonSettings(
            database_url=own_database,
            redis_url=redis_url,
            data_dir=tmp_path / "data",
            edge_port=free_port(),
            signal_addr=f"127.0.0.1:{free_port()}",
            storage_addr=f"127.0.0.1:{free_port()}",
            # The operator's key: alerts dev accepts it as admin, next to its own edge and worker keys.
            service_api_key=service_key,
        )
        stack = DevStack(settings, capture_workers=1, extra_env=extra_env, serve_metrics=True)
        stack.start()
        try:
            # Capture workers count as started once spawned; their endpoint answers a moment later.
            for process, url in stack.metrics_urls.items():
                wait_until(f"{process} serves {url}", lambda url=url: http_ok(url))
            with grpc.insecure_channel(settings.signal_addr) as channel:
                yield System(
                    stack=stack,
                    api_key=service_key,
                    signals=signal_service_pb2_grpc.SignalServiceStub(channel),
                    users=user_service_pb2_grpc.UserServiceStub(channel),
                )
        finally:
            stack.stop()


def create_user_with_session(system: System) -> tuple[str, str]:
    """A premium user whose TradingView cookies the chart stub accepts; returns (user id, webhook token)."""
    created = system.users.CreateUser(
        user_service_pb2.CreateUserRequest(plan=resources_pb2.PLAN_PREMIUM, default_chart_id=CHART_ID),
        metadata=system.metadata,
        timeout=5.0,
    )
    system.users.SetTradingViewSession(
        user_service_pb2.SetTradingViewSessionRequest(
            user_id=created.user.user_id, sessionid="observed-session", sessionid_sign="observed-sign"
        ),
        metadata=system.metadata,
        timeout=5.0,
    )
    return created.user.user_id, created.webhook_token


def kill_chromium(system: System, worker: str) -> None:
    """SIGKILLs the worker's Chromium, as the OOM killer would."""
    process = system.stack.processes[worker].process
    assert process is not None
    found = [
        child
        for child in psutil.Process(process.pid).children(recursive=True)
        if "chrom" in child.name().lower()
    ]
    assert found, f"{worker} runs no Chromium"
    for child in found:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.send_signal(signal.SIGKILL)


async def postpone_an_outbox_message(database_url: str) -> None:
    """What the relay writes when Redis refuses a message: a row due later (here: after the test)."""
    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        await connection.execute(
            "INSERT INTO outbox (queue_name, actor_name, args, options, attempts, last_error, available_at) "
            "VALUES ('capture.premium', 'capture_screenshot_premium', $1::jsonb, '{}'::jsonb, 1, "
            "'provoked by test_observability', now() + interval '1 hour')",
            json.dumps([str(uuid.uuid4())]),
        )
    finally:
        await connection.close()


def test_a_webhook_to_screenshot_run_shows_in_every_metric_and_one_request_id_in_every_log(
    system: System,
) -> None:
    scrapes = Scrapes()
    user_id, token = create_user_with_session(system)

    # While the chart stub hangs, a job that reaches the chart stays in progress, however slow this machine
    # is; once it draws again the job completes (on its retry, if its first attempt saw the hanging page).
    system.set_chart_mode("hang")
    followed = system.post_webhook(token, 1)
    assert followed.status_code == 200, followed.text
    request_id = followed.headers["x-request-id"]
    signal_id = followed.json()["signal_id"]
    capture_metrics = system.metrics_url("capture-0")
    wait_until(
        "a capture job in progress",
        lambda: metric_value("capture-0", capture_metrics, "alerts_jobs_in_progress") >= 1,
    )
    scrapes.add(scrape("capture-0", capture_metrics))
    system.set_chart_mode("ok")
    system.wait_captured(signal_id)

    kill_chromium(system, "capture-0")
    after_crash = system.post_webhook(token, 2)
    assert after_crash.status_code == 200, after_crash.text
    system.wait_captured(after_crash.json()["signal_id"])

    asyncio.run(postpone_an_outbox_message(system.stack.env["ALERTS_DATABASE_URL"]))
    signal_metrics = system.metrics_url("signal")
    # The relay's backlog loop refreshes the outbox, queue and worker gauges every 2 s.
    wait_until(
        "the outbox backlog gauge counts the postponed row",
        lambda: metric_value("signal", signal_metrics, "alerts_outbox_backlog") >= 1,
    )
    stream = system.signals.SubscribeSignals(
        signal_service_pb2.SubscribeSignalsRequest(user_id=user_id), metadata=system.metadata
    )
    try:
        # Sent once the subscription is registered.
        stream.initial_metadata()
        health = httpx.get(f"{system.stack.edge_url}/health", timeout=5.0).json()
        assert (health["status"], health["active_workers"], health["queue_length"]) == ("ok", 1, 0), health
        for process, url in system.stack.metrics_urls.items():
            scrapes.add(scrape(process, url))
    finally:
        stream.cancel()

    # With the only worker gone, the next capture job waits on its queue.
    system.stack.processes["capture-0"].stop()
    queued = system.post_webhook(token, 3)
    assert queued.status_code == 200, queued.text
    wait_until(
        "a capture job waiting on capture.premium",
        lambda: metric_value("signal", signal_metrics, "alerts_queue_length", queue="capture.premium") >= 1,
    )
    scrapes.add(scrape("signal", signal_metrics))

    # With the signal service gone, the edge keeps the webhook in its spool and answers 202.
    system.stack.processes["signal"].stop()
    spooled = system.post_webhook(token, 4)
    assert spooled.status_code == 202, spooled.text
    scrapes.add(scrape("edge", system.metrics_url("edge")))

    missing = {name: labels for name, labels in REQUIRED_SAMPLES.items() if not scrapes.nonzero(name, labels)}
    assert not missing, f"no non-zero sample for {missing}; logs in {system.stack.log_dir}"
    codes = {sample.labels["code"] for sample in scrapes.samples if "code" in sample.labels}
    assert codes
    assert all(code.isupper() for code in codes), codes
    assert scrapes.nonzero("alerts_storage_bytes_written_total", {})[0].process == "storage"

    for process, event in (
        ("edge", "webhook answered"),
        ("signal", "signal stored"),
        ("signal", "capture claimed"),
        ("signal", "capture reported"),
        ("capture-0", "capture started"),
        ("capture-0", "capture finished"),
        ("storage", "object stored"),
    ):
        assert any(
            line.get("request_id") == request_id and line.get("msg") == event
            for line in system.log_lines(process)
        ), f"no {event!r} line with request id {request_id} in {process}.log"
    logs = "\n".join(
        (system.stack.log_dir / f"{process}.log").read_text(errors="replace")
        for process in ("edge", "signal", "capture-0", "storage")
    )
    assert token not in logs
    assert "observed-session" not in logs
    assert "observed-sign" not in logs
