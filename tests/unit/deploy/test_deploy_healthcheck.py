"""deploy/healthcheck.py, run as the containers run it, against real gRPC and HTTP servers on loopback."""

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry, Gauge, generate_latest

HEALTHCHECK = Path(__file__).resolve().parents[3] / "deploy" / "healthcheck.py"


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """An HTTP server for `handler` on a loopback port, on its own thread; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    # The default half-second poll would make every shutdown, so every test, half a second longer.
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def probe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK), "--timeout", "2", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.fixture
def health_server() -> Iterator[tuple[str, health.HealthServicer]]:
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", servicer
    server.stop(grace=None)


class _StatusHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = 200 if self.path == "/health/ready" else 503
        self.send_response(status)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output quiet."""


@pytest.fixture
def http_server() -> Iterator[str]:
    with serving(_StatusHandler) as url:
        yield url


def test_grpc_serving_exits_zero(health_server: tuple[str, health.HealthServicer]) -> None:
    address, _ = health_server
    assert probe("grpc", address).returncode == 0


def test_grpc_not_serving_exits_one(health_server: tuple[str, health.HealthServicer]) -> None:
    address, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    result = probe("grpc", address)
    assert result.returncode == 1
    assert "NOT_SERVING" in result.stderr


def test_grpc_unknown_service_exits_one(health_server: tuple[str, health.HealthServicer]) -> None:
    address, _ = health_server
    result = probe("grpc", address, "apidevs.alerts.v1.NoSuchService")
    assert result.returncode == 1
    assert "NOT_FOUND" in result.stderr


def test_grpc_named_service_serving_exits_zero(health_server: tuple[str, health.HealthServicer]) -> None:
    address, servicer = health_server
    servicer.set("apidevs.alerts.v1.SignalService", health_pb2.HealthCheckResponse.SERVING)
    assert probe("grpc", address, "apidevs.alerts.v1.SignalService").returncode == 0


def test_grpc_nothing_listening_exits_one() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free_port = sock.getsockname()[1]
    assert probe("grpc", f"127.0.0.1:{free_port}").returncode == 1


def test_http_2xx_exits_zero(http_server: str) -> None:
    assert probe("http", f"{http_server}/health/ready").returncode == 0


def test_http_5xx_exits_one(http_server: str) -> None:
    assert probe("http", f"{http_server}/health/down").returncode == 1


class _SpoolMetrics:
    """An edge's /metrics stand-in: answers each scrape with the next pending count, then repeats the last.

    The text is prometheus_client's own exposition, as the edge serves it; None serves no spool gauge.
    """

    def __init__(self, readings: list[float | None]) -> None:
        self.readings = readings
        self.scrapes = 0

    def next_body(self) -> bytes:
        pending = self.readings[min(self.scrapes, len(self.readings) - 1)]
        self.scrapes += 1
        registry = CollectorRegistry()
        Gauge("alerts_spool_bytes", "Bytes waiting", registry=registry).set(0 if pending is None else 100)
        if pending is not None:
            Gauge("alerts_spool_pending", "Requests waiting", registry=registry).set(pending)
        return generate_latest(registry)


@pytest.fixture
def spool_metrics() -> Iterator[tuple[str, _SpoolMetrics]]:
    metrics = _SpoolMetrics([0])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = metrics.next_body()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Keep test output quiet."""

    with serving(Handler) as url:
        yield f"{url}/metrics", metrics


def test_spool_drained_empty_spool_exits_zero(spool_metrics: tuple[str, _SpoolMetrics]) -> None:
    url, _ = spool_metrics
    assert probe("spool-drained", url).returncode == 0


def test_spool_drained_pending_spool_exits_one(spool_metrics: tuple[str, _SpoolMetrics]) -> None:
    url, metrics = spool_metrics
    metrics.readings = [3]
    result = probe("spool-drained", url, "--wait", "0.5", "--poll", "0.1")
    assert result.returncode == 1
    assert "3 pending" in result.stderr


def test_spool_drained_waits_for_the_replayer_to_empty_it(spool_metrics: tuple[str, _SpoolMetrics]) -> None:
    url, metrics = spool_metrics
    metrics.readings = [5, 2, 1, 0]
    assert probe("spool-drained", url, "--wait", "20", "--poll", "0.05").returncode == 0
    assert metrics.scrapes >= 5, "drained means two empty readings in a row"


def test_spool_drained_needs_a_second_empty_reading(spool_metrics: tuple[str, _SpoolMetrics]) -> None:
    url, metrics = spool_metrics
    # A worker that is not the replayer publishes totals up to a poll late: one 0 may be stale.
    metrics.readings = [0, 4]
    # A wait long enough for a second reading even on a loaded machine (one reading near the deadline counts).
    result = probe("spool-drained", url, "--wait", "3", "--poll", "0.1")
    assert result.returncode == 1
    assert "4 pending" in result.stderr


def test_spool_drained_without_the_gauge_exits_one(spool_metrics: tuple[str, _SpoolMetrics]) -> None:
    url, metrics = spool_metrics
    metrics.readings = [None]
    result = probe("spool-drained", url)
    assert result.returncode == 1
    assert "no alerts_spool_pending" in result.stderr


def test_spool_drained_nothing_listening_exits_one() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free_port = sock.getsockname()[1]
    result = probe("spool-drained", f"http://127.0.0.1:{free_port}/metrics", "--wait", "0.3", "--poll", "0.1")
    assert result.returncode == 1
    assert "unreadable" in result.stderr


class _CaptureMetrics:
    """A capture worker's /metrics stand-in, in prometheus_client's exposition; None leaves a gauge out."""

    def __init__(self) -> None:
        self.heartbeat: float | None = time.time()
        self.oldest_job_started: float | None = 0.0

    def body(self) -> bytes:
        registry = CollectorRegistry()
        if self.heartbeat is not None:
            Gauge("alerts_capture_heartbeat_timestamp_seconds", "beat", registry=registry).set(self.heartbeat)
        if self.oldest_job_started is not None:
            Gauge("alerts_capture_oldest_job_started_timestamp_seconds", "job", registry=registry).set(
                self.oldest_job_started
            )
        return generate_latest(registry)


@pytest.fixture
def capture_metrics() -> Iterator[tuple[str, _CaptureMetrics]]:
    metrics = _CaptureMetrics()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = metrics.body()
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Keep test output quiet."""

    with serving(Handler) as url:
        yield f"{url}/metrics", metrics


def test_capture_alive_with_a_fresh_heartbeat_and_no_job(
    capture_metrics: tuple[str, _CaptureMetrics],
) -> None:
    url, _ = capture_metrics
    assert probe("capture-alive", url).returncode == 0


def test_capture_alive_with_a_job_inside_its_time(capture_metrics: tuple[str, _CaptureMetrics]) -> None:
    url, metrics = capture_metrics
    metrics.oldest_job_started = time.time() - 20
    assert probe("capture-alive", url, "--max-job-age", "90").returncode == 0


def test_a_silent_event_loop_fails(capture_metrics: tuple[str, _CaptureMetrics]) -> None:
    """The metrics server still answers; the heartbeat written from the actors' loop has stopped."""
    url, metrics = capture_metrics
    metrics.heartbeat = time.time() - 120
    result = probe("capture-alive", url, "--max-heartbeat-age", "30")
    assert result.returncode == 1
    assert "event loop silent" in result.stderr


def test_a_job_stuck_past_its_limit_fails(capture_metrics: tuple[str, _CaptureMetrics]) -> None:
    """The event loop beats, but a worker thread has been in one job far past the time limit."""
    url, metrics = capture_metrics
    metrics.oldest_job_started = time.time() - 600
    result = probe("capture-alive", url, "--max-job-age", "90")
    assert result.returncode == 1
    assert "worker thread is stuck" in result.stderr


def test_no_heartbeat_yet_fails(capture_metrics: tuple[str, _CaptureMetrics]) -> None:
    url, metrics = capture_metrics
    metrics.heartbeat = None
    result = probe("capture-alive", url)
    assert result.returncode == 1
    assert "no heartbeat" in result.stderr


def test_capture_alive_nothing_listening_fails() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free_port = sock.getsockname()[1]
    assert probe("capture-alive", f"http://127.0.0.1:{free_port}/metrics").returncode == 1
