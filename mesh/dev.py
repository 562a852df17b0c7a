"""The whole system on one machine: `alerts dev`, `alerts demo`, and end-to-end tests.

Embedded PostgreSQL and Redis start when no URLs are configured; every service runs as its own process
(the same commands production runs), plus the local TradingView chart stub unless a chart origin is set.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mesh.auth import SystemKeys
from mesh.embedded import EmbeddedInfrastructure, start_embedded
from mesh.processes import ManagedProcess, alerts_argv, free_port, grpc_serving, http_ok
from mesh.settings import CommonSettings

log = logging.getLogger(__name__)

DEV_STATE_FILE = "dev.json"


@dataclass
class DevStack:
    settings: CommonSettings
    capture_workers: int = 1
    with_chart_stub: bool = True
    extra_env: Mapping[str, str] = field(default_factory=dict)
    infra: EmbeddedInfrastructure = field(default_factory=EmbeddedInfrastructure)
    processes: dict[str, ManagedProcess] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    api_key: str = ""
    # The operator's key (api_key, admin unless ALERTS_API_KEYS says otherwise), the edge's and the workers'.
    keys: SystemKeys | None = None
    # Told each start-up step as it finishes ("migrations applied", "edge ready"), for visible progress.
    on_progress: Callable[[str], None] | None = None
    # Gives every gRPC service and capture worker its own ALERTS_METRICS_PORT (the edge serves /metrics
    # itself); one port shared through the environment would let only the first process bind it.
    serve_metrics: bool = False
    metrics_ports: dict[str, int] = field(default_factory=dict)

    @property
    def edge_url(self) -> str:
        return f"http://127.0.0.1:{self.env['ALERTS_EDGE_PORT']}"

    @property
    def log_dir(self) -> Path:
        return self.settings.data_dir / "logs"

    @property
    def metrics_urls(self) -> dict[str, str]:
        """Each process's Prometheus endpoint, by process name."""
        own = {name: f"http://127.0.0.1:{port}/metrics" for name, port in self.metrics_ports.items()}
        return {"edge": f"{self.edge_url}/metrics", **own}

    def start(self) -> None:
        data_dir = self.settings.data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.infra = start_embedded(
            data_dir, postgres=not self.settings.database_url, redis=not self.settings.redis_url
        )
        if self.infra.database_url or self.infra.redis_url:
            self._progress(f"embedded PostgreSQL/Redis running under {data_dir}")
        self.keys = SystemKeys.generate(
            self.settings.service_api_key.get_secret_value() if self.settings.service_api_key else None
        )
        self.api_key = self.keys.operator
        accepted = self.keys.entries(key.get_secret_value() for key in self.settings.api_keys)
        inherited = {key: value for key, value in os.environ.items() if key != "ALERTS_SERVICE_API_KEY"}
        self.env = {
            **inherited,
            **self.extra_env,
            "ALERTS_ENV": self.settings.env,
            "ALERTS_DATA_DIR": str(data_dir),
            "ALERTS_DATABASE_URL": self.settings.database_url or self.infra.database_url,
            "ALERTS_REDIS_URL": self.settings.redis_url or self.infra.redis_url,
            "ALERTS_API_KEYS": ",".join(accepted),
            "ALERTS_EDGE_PORT": str(self.settings.edge_port),
            "ALERTS_SIGNAL_ADDR": self.settings.signal_addr,
            "ALERTS_STORAGE_ADDR": self.settings.storage_addr,
        }
        self.env.setdefault("ALERTS_PUBLIC_URL", f"http://127.0.0.1:{self.settings.edge_port}")
        try:
            self._migrate()
            if self.with_chart_stub and "ALERTS_TRADINGVIEW_URL" not in os.environ:
                port = free_port()
                self.env["ALERTS_TRADINGVIEW_URL"] = f"http://127.0.0.1:{port}"
                self._launch(
                    "chart-stub",
                    ["serve", "chart-stub", "--port", str(port)],
                    lambda: http_ok(f"http://127.0.0.1:{port}/_stub/requests"),
                )
            self._launch("storage", ["serve", "storage"], lambda: grpc_serving(self.settings.storage_addr))
            self._launch("signal", ["serve", "signal"], lambda: grpc_serving(self.settings.signal_addr))
            self._launch("edge", ["serve", "edge"], lambda: http_ok(f"{self.edge_url}/health/live"))
            for index in range(self.capture_workers):
                self._launch(f"capture-{index}", ["serve", "capture"], None)
            self._write_state()
        except BaseException:
            self.stop()
            raise

    def _migrate(self) -> None:
        migrate = ManagedProcess(
            "migrate", alerts_argv("migrate"), self.env, log_path=self.log_dir / "migrate.log"
        )
        migrate.start()
        assert migrate.process is not None
        try:
            if migrate.process.wait(timeout=120) != 0:
                raise RuntimeError(f"migrations failed; see {migrate.log_path}")
        finally:
            migrate.stop()
        self._progress("migrations applied")

    def _launch(self, name: str, args: list[str], ready: object) -> None:
        env = self.env
        # Each process presents the key of its own role, so that none holds powers it does not use.
        service_key = self.keys.for_process(name) if self.keys else None
        if service_key:
            env = {**env, "ALERTS_SERVICE_API_KEY": service_key}
        if self.serve_metrics and name not in ("edge", "chart-stub"):
            # A restarted process keeps its port, so scrapers need no telling.
            port = self.metrics_ports.setdefault(name, free_port())
            env = {**env, "ALERTS_METRICS_PORT": str(port)}
        process = ManagedProcess(
            name, alerts_argv(*args), env, ready=ready, log_path=self.log_dir / f"{name}.log"
        )
        process.start()
        self.processes[name] = process
        process.wait_ready(timeout=60)
        self._progress(f"{name} started" if ready is None else f"{name} ready")

    def _progress(self, message: str) -> None:
        if self.on_progress is not None:
            self.on_progress(message)

    def add_api_keys(self, entries: Sequence[str]) -> None:
        """Accepts more caller keys (e.g. user-scoped ones for users created after start-up).

        Keys are read at start-up, so the processes that authenticate outside callers (signal, then the
        edge in front of it) restart; the other processes are clients of these and reconnect by themselves.
        """
        self.env["ALERTS_API_KEYS"] = ",".join([self.env["ALERTS_API_KEYS"], *entries])
        for name, args, ready in (
            ("signal", ["serve", "signal"], lambda: grpc_serving(self.settings.signal_addr)),
            ("edge", ["serve", "edge"], lambda: http_ok(f"{self.edge_url}/health/live")),
        ):
            self.processes.pop(name).stop()
            self._launch(name, args, ready)

    def _write_state(self) -> None:
        state = {
            "api_key": self.api_key,
            "signal_addr": self.settings.signal_addr,
            "storage_addr": self.settings.storage_addr,
            "edge_url": self.edge_url,
            "tradingview_url": self.env.get("ALERTS_TRADINGVIEW_URL", ""),
            "pid": os.getpid(),
        }
        path = self.settings.data_dir / DEV_STATE_FILE
        path.write_text(json.dumps(state, indent=2))
        path.chmod(0o600)

    def stop(self) -> None:
        """Edge first (stop taking webhooks), then workers, then the services they call, then storage."""
        order = [
            "edge",
            *[name for name in self.processes if name.startswith("capture")],
            "signal",
            "storage",
        ]
        order += [name for name in self.processes if name not in order]
        for name in order:
            process = self.processes.get(name)
            if process is not None:
                process.stop()
        self.processes.clear()
        self.infra.stop()
        (self.settings.data_dir / DEV_STATE_FILE).unlink(missing_ok=True)


def read_dev_state(data_dir: Path) -> dict[str, str]:
    path = data_dir / DEV_STATE_FILE
    return json.loads(path.read_text()) if path.exists() else {}
