"""Child processes for `alerts dev`, `alerts demo` and tests: start, wait until ready, stop gracefully."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def grpc_serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            # The published stubs of HealthStub omit its methods.
            check = health_pb2_grpc.HealthStub(channel).Check  # type: ignore[attr-defined]
            answer = check(health_pb2.HealthCheckRequest(), timeout=1.0)
        except grpc.RpcError:
            return False
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as answer:  # noqa: S310 (loopback URL we built)
            return bool(200 <= answer.status < 300)
    except OSError:
        return False


class ProcessStartError(RuntimeError):
    """A child process exited or did not become ready; the message names it, its last words and its log."""


def last_line(path: Path | None) -> str:
    """The last non-empty line a child wrote to its log: usually why it stopped (an `alerts` command's
    failure line without its "alerts: error: " prefix, which the caller's own message adds)."""
    if path is None or not path.exists():
        return ""
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].removeprefix("alerts: error: ") if lines else ""


@dataclass
class ManagedProcess:
    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    ready: Callable[[], bool] | None = None
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> None:
        output = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(  # noqa: S603 (our own interpreter and arguments)
            list(self.argv),
            env=dict(self.env),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                said = last_line(self.log_path)
                raise ProcessStartError(
                    f"{self.name} exited with {self.process.returncode}"
                    + (f": {said}" if said else "")
                    + f"; see {self.log_path}"
                )
            if self.ready is None or self.ready():
                return
            time.sleep(0.1)
        raise ProcessStartError(f"{self.name} not ready after {timeout:.0f} s; see {self.log_path}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; the child's whole process group goes."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        return self.process.returncode

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def alerts_argv(*args: str) -> list[str]:
    """The `alerts` command run by this interpreter, whatever the PATH."""
    return [sys.executable, "-m", "alerts.cli", *args]
