"""A real `alerts serve capture` exports what its liveness probe reads, and the probe passes on it.

The stuck cases (a silent event loop, a job past its limit) are in
tests/unit/deploy/test_deploy_healthcheck.py and tests/unit/capture_service/test_liveness.py; here the
wiring: the heartbeat really comes from the running worker's event loop and the job clock is installed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import redis

from alerts.processes import ManagedProcess, alerts_argv
from capture_service.liveness import JobClock
from capture_service.main import build_worker
from capture_service.settings import CaptureSettings
from capture_service.tasks import CaptureWorkerMiddleware
from mesh.crypto import generate_key_entry
from mesh.queues import capture_workers_key
from mesh.settings import CommonSettings

HEALTHCHECK = Path(__file__).resolve().parents[3] / "deploy" / "healthcheck.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_running_worker_passes_capture_alive(redis_url: str, service_key: str, tmp_path: Path) -> None:
    namespace = f"test-liveness-{uuid.uuid4().hex[:10]}"
    worker_id = "worker-liveness"
    metrics_port = free_port()
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    environment = {
        **{key: value for key, value in os.environ.items() if not key.startswith("ALERTS_")},
        "ALERTS_ENV": "dev",
        "ALERTS_REDIS_URL": redis_url,
        "ALERTS_REDIS_NAMESPACE": namespace,
        # Never called: no job is sent, and channels connect on first use.
        "ALERTS_SIGNAL_ADDR": f"127.0.0.1:{free_port()}",
        "ALERTS_STORAGE_ADDR": f"127.0.0.1:{free_port()}",
        "ALERTS_SERVICE_API_KEY": service_key,
        "ALERTS_COOKIE_KEYS": generate_key_entry("liveness-test"),
        "ALERTS_DATA_DIR": str(tmp_path),
        "ALERTS_CAPTURE_WORKER_ID": worker_id,
        "ALERTS_METRICS_PORT": str(metrics_port),
    }
    client = redis.Redis.from_url(redis_url)
    workers_key = capture_workers_key(CommonSettings(redis_namespace=namespace))
    process = ManagedProcess(
        worker_id,
        alerts_argv("serve", "capture"),
        environment,
        ready=lambda: client.zscore(workers_key, worker_id) is not None,
        log_path=tmp_path / "worker.log",
    )
    process.start()
    try:
        process.wait_ready(90)
        with urllib.request.urlopen(metrics_url, timeout=5) as response:
            text = response.read().decode()
        assert "\nalerts_capture_heartbeat_timestamp_seconds " in text
        assert "\nalerts_capture_oldest_job_started_timestamp_seconds 0.0" in text
        probe = subprocess.run(
            [sys.executable, str(HEALTHCHECK), "capture-alive", metrics_url],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert probe.returncode == 0, probe.stderr
    finally:
        process.stop()
        client.delete(*(client.keys(f"{namespace}:*") or [b"-"]))
        client.close()


def test_the_job_clock_wraps_every_job_of_the_worker(redis_url: str, service_key: str) -> None:
    """First among the worker's middleware, so its after hook runs last: a failure report that hangs in
    CaptureWorkerMiddleware's after_process_message still counts as the job running."""
    settings = CaptureSettings(
        env="dev", redis_url=redis_url, service_api_key=service_key, cookie_keys=generate_key_entry("clock")
    )
    _, broker = build_worker(settings)
    try:
        kinds = [type(middleware) for middleware in broker.middleware]
        assert JobClock in kinds
        assert kinds.index(JobClock) < kinds.index(CaptureWorkerMiddleware)
    finally:
        broker.close()
