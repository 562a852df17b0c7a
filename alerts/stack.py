"""The whole system as child processes, wired in one place: `alerts dev`, `alerts demo`, the end-to-end
tests and the benches all build their stacks here.

`build_stack` writes every service's environment once (ports, addresses, keys, URLs, directories);
`Stack` starts each service by name with the command production runs, waits until it serves, and stops
them in an order that loses no work.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from alerts.processes import (
    ManagedProcess,
    ProcessStartError,
    alerts_argv,
    free_port,
    grpc_serving,
    http_ok,
    last_line,
)
from mesh.auth import SystemKeys, generate_key
from notify_service.telegram_stub import STUB_BOT_USERNAME

START_TIMEOUT_SECONDS = 60.0
MIGRATE_TIMEOUT_SECONDS = 120.0
# Edge first (stop taking webhooks), then workers, then the services they call; other processes last.
_STOP_ORDER = (
    "edge",
    "capture-",
    "notify-",
    "signal",
    "storage",
    "chart-stub",
    "telegram-stub",
    "discord-stub",
)


def loopback_address() -> str:
    return f"127.0.0.1:{free_port()}"


def inherited_environment() -> dict[str, str]:
    """This process's environment without its ALERTS_* variables: a stack's settings are its own."""
    return {key: value for key, value in os.environ.items() if not key.startswith("ALERTS_")}


@dataclass
class Stack:
    """Every process of one system, by name: "chart-stub", "telegram-stub", "storage", "signal", "edge",
    "capture-<n>", "notify-<n>"."""

    env: dict[str, str]
    log_dir: Path
    # The operator's (admin) key, the edge's and the workers': each process presents its own role's.
    keys: SystemKeys
    processes: dict[str, ManagedProcess] = field(default_factory=dict)
    # With `serve_metrics`, every gRPC service and capture worker gets its own ALERTS_METRICS_PORT (the
    # edge serves /metrics itself); one port shared through the environment would let only one bind it.
    serve_metrics: bool = False
    metrics_ports: dict[str, int] = field(default_factory=dict)

    @property
    def edge_url(self) -> str:
        return f"http://127.0.0.1:{self.env['ALERTS_EDGE_PORT']}"

    @property
    def signal_addr(self) -> str:
        return self.env["ALERTS_SIGNAL_ADDR"]

    @property
    def storage_addr(self) -> str:
        return self.env["ALERTS_STORAGE_ADDR"]

    @property
    def tradingview_url(self) -> str:
        return self.env.get("ALERTS_TRADINGVIEW_URL", "")

    @property
    def telegram_api_url(self) -> str:
        return self.env.get("ALERTS_TELEGRAM_API_URL", "")

    @property
    def discord_stub_url(self) -> str:
        """The Discord stub's origin: ALERTS_DISCORD_API_URL without its /api."""
        return self.env.get("ALERTS_DISCORD_API_URL", "").removesuffix("/api")

    @property
    def api_key(self) -> str:
        """The operator's key (admin): what CLI commands and tests acting as the platform present."""
        return self.keys.operator

    @property
    def metrics_urls(self) -> dict[str, str]:
        """Each process's Prometheus endpoint, by process name."""
        own = {name: f"http://127.0.0.1:{port}/metrics" for name, port in self.metrics_ports.items()}
        return {"edge": f"{self.edge_url}/metrics", **own}

    def process(self, name: str) -> ManagedProcess:
        """The process `name` would run, not yet started."""
        argv, ready = self._command(name)
        env = self.env
        own_key = self.keys.for_process(name)
        if own_key:
            env = {**env, "ALERTS_SERVICE_API_KEY": own_key}
        if self.serve_metrics and name not in ("edge", "chart-stub", "telegram-stub", "discord-stub"):
            # A restarted process keeps its port, so scrapers need no telling.
            env = {**env, "ALERTS_METRICS_PORT": str(self.metrics_ports.setdefault(name, free_port()))}
        return ManagedProcess(name, argv, env, ready=ready, log_path=self.log_dir / f"{name}.log")

    def _command(self, name: str) -> tuple[list[str], Callable[[], bool] | None]:
        if name == "chart-stub":
            url = self.tradingview_url
            return (
                alerts_argv("serve", "chart-stub", "--port", url.rsplit(":", 1)[1]),
                lambda: http_ok(f"{url}/_stub/requests"),
            )
        if name == "telegram-stub":
            url = self.telegram_api_url
            return (
                alerts_argv("serve", "telegram-stub", "--port", url.rsplit(":", 1)[1]),
                lambda: http_ok(f"{url}/_stub/requests"),
            )
        if name == "discord-stub":
            url = self.discord_stub_url
            return (
                alerts_argv("serve", "discord-stub", "--port", url.rsplit(":", 1)[1]),
                lambda: http_ok(f"{url}/_stub/requests"),
            )
        if name == "storage":
            return alerts_argv("serve", "storage"), lambda: grpc_serving(self.storage_addr)
        if name == "signal":
            return alerts_argv("serve", "signal"), lambda: grpc_serving(self.signal_addr)
        if name == "edge":
            return alerts_argv("serve", "edge"), lambda: http_ok(f"{self.edge_url}/health/live")
        if name.startswith("capture-"):
            return alerts_argv("serve", "capture"), None
        if name.startswith("notify-"):
            return alerts_argv("serve", "notify"), None
        raise ValueError(f"no process named {name!r} in a stack")

    def start(self, *names: str, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Starts the named processes together, then waits until each serves (in the order given)."""
        started = []
        for name in names:
            process = self.process(name)
            process.start()
            self.processes[name] = process
            started.append(process)
        for process in started:
            process.wait_ready(timeout)

    def migrate(self) -> None:
        """Applies the migrations (`alerts migrate`) with this stack's settings."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / "migrate.log"
        migrate = ManagedProcess("migrate", alerts_argv("migrate"), self.env, log_path=log_path)
        migrate.start()
        assert migrate.process is not None
        try:
            if migrate.process.wait(timeout=MIGRATE_TIMEOUT_SECONDS) != 0:
                raise ProcessStartError(f"migrations failed: {last_line(log_path)}; see {log_path}")
        finally:
            migrate.stop()

    def restart(self, name: str) -> None:
        self.stop(name)
        self.start(name)

    def stop(self, name: str, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait (SIGKILL after `timeout`): the graceful stop every service must survive."""
        return self.processes.pop(name).stop(timeout=timeout)

    def kill(self, name: str) -> None:
        self.processes.pop(name).kill()

    def dead_processes(self) -> list[str]:
        return [name for name, process in self.processes.items() if not process.alive()]

    def logs(self) -> str:
        """Everything the processes wrote to stdout and stderr so far."""
        return "".join(path.read_text(errors="replace") for path in sorted(self.log_dir.glob("*.log")))

    def close(self, timeout: float = 15.0) -> None:
        def rank(name: str) -> int:
            return next(
                (index for index, prefix in enumerate(_STOP_ORDER) if name.startswith(prefix)),
                len(_STOP_ORDER),
            )

        for name in sorted(self.processes, key=rank):
            self.processes[name].stop(timeout=timeout)
        self.processes.clear()


def build_stack(
    log_dir: Path,
    *,
    database_url: str,
    redis_url: str,
    data_dir: Path,
    service_key: str | None = None,
    keys: SystemKeys | None = None,
    accepted_keys: Sequence[str] = (),
    edge_host: str = "127.0.0.1",
    edge_port: int | None = None,
    signal_addr: str | None = None,
    storage_addr: str | None = None,
    tradingview_url: str | None = None,
    chart_stub: bool = False,
    telegram_stub: bool = False,
    discord_stub: bool = False,
    objects_dir: Path | None = None,
    inherited: Mapping[str, str] | None = None,
    serve_metrics: bool = False,
    **settings: str,
) -> Stack:
    """One stack's wiring. Ports and addresses left out are free loopback ones. `keys` (generated when left
    out, with `service_key` as the operator's) give the operator an admin key and the edge and the workers
    keys of their own roles; the services accept those plus `accepted_keys`. With `chart_stub` (and no
    `tradingview_url`) the chart stub serves on a free port. Local objects go to `objects_dir`, else where
    the inherited environment or the storage service's default says. With `telegram_stub` the Telegram
    stub serves on a free port as the Bot API, with a generated bot token, and user-supplied notification
    URLs may reach loopback (where test receivers listen); the notify workers poll it for the bot's
    updates (a trader's `/start <code>`). With `discord_stub` the Discord stub serves on a free port as
    Discord's API, where every stored Discord webhook URL's calls go. `inherited` is the environment the
    children start from (by default this process's without ALERTS_*); `settings` are further ALERTS_*
    variables, e.g. ALERTS_PLAN_LIMITS, applied last.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    keys = keys or SystemKeys.generate(service_key)
    edge_port = edge_port or free_port()
    env = dict(inherited_environment() if inherited is None else inherited)
    env |= {
        "ALERTS_ENV": "dev",
        "ALERTS_DATA_DIR": str(data_dir),
        "ALERTS_DATABASE_URL": database_url,
        "ALERTS_REDIS_URL": redis_url,
        # Entries given first, so the operator's admin entry wins over a plain entry of the same key.
        "ALERTS_API_KEYS": ",".join(dict.fromkeys([*accepted_keys, *keys.entries()])),
        "ALERTS_SERVICE_API_KEY": keys.operator,
        "ALERTS_EDGE_HOST": edge_host,
        "ALERTS_EDGE_PORT": str(edge_port),
        "ALERTS_SIGNAL_ADDR": signal_addr or loopback_address(),
        "ALERTS_STORAGE_ADDR": storage_addr or loopback_address(),
    }
    if objects_dir is not None:
        env["ALERTS_STORAGE_LOCAL_DIR"] = str(objects_dir)
    env.setdefault("ALERTS_PUBLIC_URL", f"http://127.0.0.1:{edge_port}")
    if tradingview_url is not None:
        env["ALERTS_TRADINGVIEW_URL"] = tradingview_url
    elif chart_stub:
        env["ALERTS_TRADINGVIEW_URL"] = f"http://{loopback_address()}"
    if telegram_stub:
        env["ALERTS_TELEGRAM_API_URL"] = f"http://{loopback_address()}"
        env["ALERTS_TELEGRAM_BOT_TOKEN"] = f"{free_port()}:dev-{generate_key()[3:23]}"
        env["ALERTS_NOTIFY_ALLOW_LOOPBACK"] = "true"
        # Traders connect their chat with `/start <code>`: the stub's bot, polled by the notify workers.
        env["ALERTS_TELEGRAM_BOT_USERNAME"] = STUB_BOT_USERNAME
        env["ALERTS_TELEGRAM_POLL_UPDATES"] = "true"
    if discord_stub:
        env["ALERTS_DISCORD_API_URL"] = f"http://{loopback_address()}/api"
        env["ALERTS_NOTIFY_ALLOW_LOOPBACK"] = "true"
    env |= settings
    return Stack(env=env, log_dir=log_dir, keys=keys, serve_metrics=serve_metrics)
