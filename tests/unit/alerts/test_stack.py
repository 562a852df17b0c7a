"""alerts.stack: one stack's wiring, written once for dev, demo, the end-to-end tests and the benches."""

from __future__ import annotations

from pathlib import Path

import pytest

from alerts.stack import Stack, build_stack
from mesh.auth import Role, role_entry


def wiring(tmp_path: Path, **options) -> Stack:
    return build_stack(
        tmp_path / "logs",
        database_url="postgresql+asyncpg://postgres@127.0.0.1:5432/alerts",
        redis_url="redis://127.0.0.1:6379/0",
        data_dir=tmp_path / "data",
        **options,
    )


def test_the_operators_key_is_admin_beside_the_configured_ones(tmp_path: Path) -> None:
    # `alerts dev` with ALERTS_API_KEYS set used to leave its own key out: every service call was refused.
    stack = wiring(tmp_path, service_key="sk-services", accepted_keys=["sk-platform", "sha256:ab@user:7"])
    assert stack.api_key == "sk-services"
    assert stack.env["ALERTS_API_KEYS"].split(",") == [
        "sk-platform",
        "sha256:ab@user:7",
        role_entry("sk-services", Role.ADMIN),
        role_entry(stack.keys.edge, Role.EDGE),
        role_entry(stack.keys.worker, Role.WORKER),
    ]


def test_each_process_presents_the_key_of_its_own_role(tmp_path: Path) -> None:
    stack = wiring(tmp_path)
    presented = {
        name: stack.process(name).env["ALERTS_SERVICE_API_KEY"] for name in ("edge", "signal", "capture-0")
    }
    assert presented == {"edge": stack.keys.edge, "signal": stack.keys.worker, "capture-0": stack.keys.worker}
    assert stack.process("storage").env["ALERTS_SERVICE_API_KEY"] == stack.api_key
    assert len({stack.api_key, stack.keys.edge, stack.keys.worker}) == 3


def test_ports_left_out_are_distinct_free_loopback_ones(tmp_path: Path) -> None:
    stack = wiring(tmp_path, chart_stub=True)
    ports = {
        stack.env["ALERTS_EDGE_PORT"],
        stack.signal_addr.rpartition(":")[2],
        stack.storage_addr.rpartition(":")[2],
        stack.tradingview_url.rpartition(":")[2],
    }
    assert len(ports) == 4
    assert stack.edge_url == f"http://127.0.0.1:{stack.env['ALERTS_EDGE_PORT']}"
    assert stack.env["ALERTS_PUBLIC_URL"] == stack.edge_url
    assert stack.signal_addr.startswith("127.0.0.1:")


def test_given_addresses_and_chart_origin_are_kept(tmp_path: Path) -> None:
    stack = wiring(
        tmp_path,
        edge_port=8080,
        signal_addr="127.0.0.1:50051",
        storage_addr="127.0.0.1:50052",
        tradingview_url="https://www.tradingview.com",
        chart_stub=True,
    )
    assert stack.edge_url == "http://127.0.0.1:8080"
    assert (stack.signal_addr, stack.storage_addr) == ("127.0.0.1:50051", "127.0.0.1:50052")
    assert stack.tradingview_url == "https://www.tradingview.com"


def test_no_chart_stub_unless_asked(tmp_path: Path) -> None:
    assert "ALERTS_TRADINGVIEW_URL" not in wiring(tmp_path).env


def test_the_callers_alerts_variables_stay_out_unless_inherited_on_purpose(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALERTS_PLAN_LIMITS", "{}")
    monkeypatch.setenv("PATH_FOR_TEST", "kept")
    assert "ALERTS_PLAN_LIMITS" not in wiring(tmp_path).env
    assert wiring(tmp_path).env["PATH_FOR_TEST"] == "kept"
    inherited = wiring(tmp_path, inherited={"ALERTS_PLAN_LIMITS": "{}", "ALERTS_PUBLIC_URL": "https://x"})
    assert inherited.env["ALERTS_PLAN_LIMITS"] == "{}"
    assert inherited.env["ALERTS_PUBLIC_URL"] == "https://x"


def test_settings_are_applied_last(tmp_path: Path) -> None:
    stack = wiring(tmp_path, ALERTS_ENV="production", ALERTS_EDGE_PORT="9999")
    assert stack.env["ALERTS_ENV"] == "production"
    assert stack.edge_url == "http://127.0.0.1:9999"


def test_objects_go_where_asked(tmp_path: Path) -> None:
    assert wiring(tmp_path, objects_dir=tmp_path / "o").env["ALERTS_STORAGE_LOCAL_DIR"] == str(tmp_path / "o")
    assert "ALERTS_STORAGE_LOCAL_DIR" not in wiring(tmp_path).env


def test_metrics_ports_are_per_process_and_kept_across_restarts(tmp_path: Path) -> None:
    stack = wiring(tmp_path, serve_metrics=True)
    signal = stack.process("signal").env["ALERTS_METRICS_PORT"]
    assert stack.process("signal").env["ALERTS_METRICS_PORT"] == signal
    assert stack.process("capture-0").env["ALERTS_METRICS_PORT"] != signal
    assert "ALERTS_METRICS_PORT" not in stack.process("edge").env
    assert set(stack.metrics_urls) == {"edge", "signal", "capture-0"}


def test_every_service_runs_the_production_command(tmp_path: Path) -> None:
    stack = wiring(tmp_path, chart_stub=True)
    for name, target in (
        ("storage", "storage"),
        ("signal", "signal"),
        ("edge", "edge"),
        ("capture-3", "capture"),
    ):
        assert list(stack.process(name).argv[-2:]) == ["serve", target]
    assert "chart-stub" in stack.process("chart-stub").argv
    with pytest.raises(ValueError, match="no process named"):
        stack.process("database")


def test_close_stops_the_edge_first_and_storage_after_the_services_calling_it(tmp_path: Path) -> None:
    stack = wiring(tmp_path)
    stopped: list[str] = []

    class Recorder:
        def __init__(self, name: str) -> None:
            self.name = name

        def stop(self, timeout: float) -> None:
            stopped.append(self.name)

    for name in ("storage", "chart-stub", "signal", "capture-1", "edge", "capture-0"):
        stack.processes[name] = Recorder(name)  # type: ignore[assignment]
    stack.close()
    assert stopped == ["edge", "capture-1", "capture-0", "signal", "storage", "chart-stub"]
    assert not stack.processes
