"""The whole system on one machine: `alerts dev`, `alerts demo`, and end-to-end tests.

Embedded PostgreSQL and Redis start when no URLs are configured; every service runs as its own process
(the same commands production runs), plus the local TradingView chart stub unless a chart origin is set.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alerts.embedded import EmbeddedInfrastructure, start_embedded
from alerts.processes import ManagedProcess
from alerts.stack import Stack, build_stack
from mesh.settings import CommonSettings

log = logging.getLogger(__name__)

DEV_STATE_FILE = "dev.json"


@dataclass
class DevStack:
    """The stack `alerts dev` runs, on the configured settings; what the settings leave out (database,
    Redis, chart origin, the services' key) it provides."""

    settings: CommonSettings
    capture_workers: int = 1
    with_chart_stub: bool = True
    # The Telegram stub as the Bot API, and a notify worker delivering to it.
    with_telegram_stub: bool = True
    # The Discord stub as Discord's API: Discord webhooks in preferences deliver to it.
    with_discord_stub: bool = True
    extra_env: Mapping[str, str] = field(default_factory=dict)
    infra: EmbeddedInfrastructure = field(default_factory=EmbeddedInfrastructure)
    # Told each start-up step as it finishes ("migrations applied", "edge ready"), for visible progress.
    on_progress: Callable[[str], None] | None = None
    serve_metrics: bool = False
    stack: Stack | None = None

    @property
    def running(self) -> Stack:
        if self.stack is None:
            raise RuntimeError("the dev stack has not been started")
        return self.stack

    @property
    def env(self) -> dict[str, str]:
        return self.running.env

    @property
    def processes(self) -> dict[str, ManagedProcess]:
        return self.running.processes

    @property
    def api_key(self) -> str:
        return self.running.api_key

    @property
    def edge_url(self) -> str:
        return self.running.edge_url

    @property
    def signal_addr(self) -> str:
        return self.running.signal_addr

    @property
    def storage_addr(self) -> str:
        return self.running.storage_addr

    @property
    def tradingview_url(self) -> str:
        return self.running.tradingview_url

    @property
    def telegram_api_url(self) -> str:
        return self.running.telegram_api_url

    @property
    def discord_stub_url(self) -> str:
        return self.running.discord_stub_url

    @property
    def metrics_urls(self) -> dict[str, str]:
        return self.running.metrics_urls

    @property
    def log_dir(self) -> Path:
        return self.settings.data_dir / "logs"

    def dead_processes(self) -> list[str]:
        return self.running.dead_processes()

    def start(self) -> None:
        data_dir = self.settings.data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        self.infra = start_embedded(
            data_dir, postgres=not self.settings.database_url, redis=not self.settings.redis_url
        )
        if self.infra.database_url or self.infra.redis_url:
            self._progress(f"embedded PostgreSQL/Redis running under {data_dir}")
        service_key = self.settings.service_api_key
        chart_stub = self.with_chart_stub and "ALERTS_TRADINGVIEW_URL" not in os.environ
        telegram_stub = self.with_telegram_stub and "ALERTS_TELEGRAM_API_URL" not in os.environ
        discord_stub = self.with_discord_stub and "ALERTS_DISCORD_API_URL" not in os.environ
        # Typed Any: mypy checks an unpacked dict against every keyword of build_stack, not only **settings.
        settings: dict[str, Any] = {"ALERTS_ENV": self.settings.env, **self.extra_env}
        self.stack = build_stack(
            self.log_dir,
            database_url=self.settings.database_url or self.infra.database_url,
            redis_url=self.settings.redis_url or self.infra.redis_url,
            data_dir=data_dir,
            service_key=service_key.get_secret_value() if service_key else None,
            accepted_keys=[key.get_secret_value() for key in self.settings.api_keys],
            edge_host=self.settings.edge_host,
            edge_port=self.settings.edge_port,
            signal_addr=self.settings.signal_addr,
            storage_addr=self.settings.storage_addr,
            chart_stub=chart_stub,
            telegram_stub=telegram_stub,
            discord_stub=discord_stub,
            inherited=os.environ,
            serve_metrics=self.serve_metrics,
            **settings,
        )
        try:
            self.stack.migrate()
            self._progress("migrations applied")
            names = ["chart-stub"] if chart_stub else []
            names += ["telegram-stub"] if telegram_stub else []
            names += ["discord-stub"] if discord_stub else []
            names += ["storage", "signal", "edge", *(f"capture-{n}" for n in range(self.capture_workers))]
            names += ["notify-0"]
            for name in names:
                self.stack.start(name)
                worker = name.startswith(("capture-", "notify-"))
                self._progress(f"{name} started" if worker else f"{name} ready")
            self._write_state()
        except BaseException:
            self.stop()
            raise

    def _progress(self, message: str) -> None:
        if self.on_progress is not None:
            self.on_progress(message)

    def _write_state(self) -> None:
        state = {
            "api_key": self.api_key,
            "signal_addr": self.signal_addr,
            "storage_addr": self.storage_addr,
            "edge_url": self.edge_url,
            "tradingview_url": self.tradingview_url,
            "pid": os.getpid(),
        }
        path = self.settings.data_dir / DEV_STATE_FILE
        path.write_text(json.dumps(state, indent=2))
        path.chmod(0o600)

    def stop(self) -> None:
        if self.stack is not None:
            self.stack.close()
        self.infra.stop()
        (self.settings.data_dir / DEV_STATE_FILE).unlink(missing_ok=True)


def read_dev_state(data_dir: Path) -> dict[str, str]:
    path = data_dir / DEV_STATE_FILE
    return json.loads(path.read_text()) if path.exists() else {}
