"""deploy/healthcheck.py, run as the containers run it, against real gRPC and HTTP servers on loopback."""

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

HEALTHCHECK = Path(__file__).resolve().parents[3] / "deploy" / "healthcheck.py"


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
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StatusHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


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
