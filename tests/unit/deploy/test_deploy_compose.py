"""deploy/compose.yaml runs real `alerts` commands, waits on real health, and wires addresses consistently."""

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from alerts.cli import PRODUCTION_COMMANDS

DEPLOY_DIR = Path(__file__).resolve().parents[3] / "deploy"

ALERTS_COMMANDS = set(PRODUCTION_COMMANDS)
APP_IMAGES = {"apidevs-alerts:dev", "apidevs-alerts-capture:dev"}
HEALTHCHECK_SCRIPT = "/opt/alerts/healthcheck.py"
# Run from the host's scheduler (`docker compose run`), not kept up by `docker compose up`.
SCHEDULED_SERVICES = {"audit-prune"}
ONE_SHOT_SERVICES = {"migrate", *SCHEDULED_SERVICES}


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY_DIR / "compose.yaml").read_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def app_services() -> dict[str, dict[str, Any]]:
    return {name: service for name, service in services().items() if service.get("image") in APP_IMAGES}


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def test_app_services_run_real_alerts_commands() -> None:
    commands = {name: tuple(service["command"]) for name, service in app_services().items()}
    assert set(commands) == {"migrate", "storage", "signal", "edge", "capture", "notify", "audit-prune"}
    unknown = {name: command for name, command in commands.items() if command not in ALERTS_COMMANDS}
    assert unknown == {}


def test_every_serve_target_and_migrate_runs_somewhere() -> None:
    assert {tuple(service["command"]) for service in app_services().values()} == ALERTS_COMMANDS


def test_scheduled_jobs_are_not_started_by_up() -> None:
    for name in SCHEDULED_SERVICES:
        service = services()[name]
        assert service["profiles"], f"{name} would run once at `up` and never again"
        assert service["restart"] == "no", f"{name} is a one-shot job"
    assert all("profiles" not in services()[name] for name in set(app_services()) - SCHEDULED_SERVICES)


def image_data_dir() -> str:
    """ALERTS_DATA_DIR as the runtime image sets it."""
    (match,) = re.findall(r"ALERTS_DATA_DIR=(\S+)", (DEPLOY_DIR / "Dockerfile").read_text())
    return match


def test_edge_spool_is_on_a_named_volume_at_the_data_dir() -> None:
    edge = services()["edge"]
    data_dir = edge["environment"].get("ALERTS_DATA_DIR", image_data_dir())
    volumes = dict(volume.split(":", 1) for volume in edge["volumes"])
    mounted_at_data_dir = [source for source, target in volumes.items() if target == data_dir]
    assert len(mounted_at_data_dir) == 1, (
        f"nothing durable at {data_dir}: the spool would die with the container"
    )
    assert mounted_at_data_dir[0] in compose()["volumes"], "a named volume, not a bind mount or anonymous one"


def test_redis_persists_queued_jobs() -> None:
    command = services()["redis"]["command"]
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert command[0] == "redis-server"
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] == "everysec"
    assert any(volume.endswith(":/data") for volume in services()["redis"]["volumes"])


def test_replicas_match_the_issue() -> None:
    replicas = {name: service.get("deploy", {}).get("replicas", 1) for name, service in services().items()}
    assert replicas["edge"] == 2
    assert replicas["signal"] == 2
    assert replicas["capture"] >= 1


def test_depends_on_conditions_are_satisfiable() -> None:
    all_services = services()
    for name, service in all_services.items():
        for dependency, spec in service.get("depends_on", {}).items():
            assert dependency in all_services, f"{name} depends on unknown {dependency}"
            condition = spec["condition"]
            assert condition in {"service_started", "service_healthy", "service_completed_successfully"}
            if condition == "service_healthy":
                assert "healthcheck" in all_services[dependency], (
                    f"{name} waits on {dependency}'s missing check"
                )
            if condition == "service_completed_successfully":
                assert all_services[dependency].get("restart") == "no", f"{dependency} is not a one-shot job"


def test_database_users_wait_for_migrations() -> None:
    for name in ("signal", "storage"):
        assert services()[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services()["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_app_healthchecks_probe_what_the_service_listens_on() -> None:
    for name, service in app_services().items():
        if name in ONE_SHOT_SERVICES:
            assert "healthcheck" not in service
            continue
        test = service["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", HEALTHCHECK_SCRIPT]
        environment = service["environment"]
        mode, target = test[3], test[4]
        if name in {"signal", "storage"}:
            listen = environment[f"ALERTS_{name.upper()}_ADDR"]
            assert mode == "grpc"
            assert host_port(target)[1] == host_port(listen)[1]
            assert host_port(listen)[0] == "0.0.0.0", f"{name} must listen beyond loopback in a container"
        elif name == "edge":
            assert (mode, target) == (
                "http",
                f"http://127.0.0.1:{environment['ALERTS_EDGE_PORT']}/health/ready",
            )
        elif name == "notify":
            # Notify workers serve only their metrics; the notification alerts watch their progress.
            assert (mode, target) == (
                "http",
                f"http://127.0.0.1:{environment['ALERTS_METRICS_PORT']}/metrics",
            )
        else:
            assert (mode, target) == (
                "capture-alive",
                f"http://127.0.0.1:{environment['ALERTS_METRICS_PORT']}/metrics",
            )


@pytest.mark.parametrize("variable", ["ALERTS_SIGNAL_ADDR", "ALERTS_STORAGE_ADDR"])
def test_callers_reach_addresses_that_exist(variable: str) -> None:
    all_services = services()
    envoy_ports = {int(port.split(":")[-1]) for port in all_services["envoy"]["ports"]}
    for name, service in app_services().items():
        host, port = host_port(service["environment"][variable])
        if host == "0.0.0.0":
            continue
        assert host in all_services, f"{name}: {variable} names unknown host {host}"
        if host == "envoy":
            assert port in envoy_ports
        else:
            listen = all_services[host]["environment"][variable]
            assert host_port(listen)[1] == port


def test_edge_trusts_forwarded_headers_only_from_envoy() -> None:
    envoy_address = services()["envoy"]["networks"]["default"]["ipv4_address"]
    assert services()["edge"]["environment"]["ALERTS_TRUSTED_PROXIES"] == f"{envoy_address}/32"


def test_secrets_come_from_the_environment() -> None:
    """Wherever a service is given a secret, it is the operator's (deploy/.env), never a default; which
    service gets which is held by tests/unit/deploy/test_deploy_settings.py."""
    given = 0
    for name, service in app_services().items():
        environment = service["environment"]
        for variable in (
            "ALERTS_API_KEYS",
            "ALERTS_SERVICE_API_KEY",
            "ALERTS_COOKIE_KEYS",
            "ALERTS_MEDIA_SIGNING_KEY",
        ):
            if variable in environment:
                given += 1
                # The service key is the role's own (EDGE_/WORKER_SERVICE_API_KEY), still without a default.
                assert re.match(r"^\$\{[A-Z_]+:\?", environment[variable]), (
                    f"{name}: {variable} has a default"
                )
    assert given > 0


def test_the_edge_and_the_workers_present_keys_of_their_own_role() -> None:
    presented = {
        name: service["environment"].get("ALERTS_SERVICE_API_KEY") for name, service in app_services().items()
    }
    assert presented["edge"].startswith("${EDGE_SERVICE_API_KEY:?")
    assert presented["capture"].startswith("${WORKER_SERVICE_API_KEY:?")
    assert presented["signal"].startswith("${WORKER_SERVICE_API_KEY:?")
    assert presented["notify"].startswith("${WORKER_SERVICE_API_KEY:?")
    callers = {"edge", "capture", "signal", "notify"}
    assert all(presented[name] is None for name in presented.keys() - callers), (
        "a key for a process calling no one"
    )


def test_env_example_names_every_required_variable() -> None:
    text = (DEPLOY_DIR / "compose.yaml").read_text()
    required = {part.split(":?")[0] for part in text.split("${")[1:] if ":?" in part.split("}")[0]}
    example = (DEPLOY_DIR / ".env.example").read_text()
    declared = {line.split("=")[0] for line in example.splitlines() if line and not line.startswith("#")}
    assert required <= declared


def test_every_production_command_is_accepted_by_the_cli() -> None:
    from alerts.cli import build_parser

    for command in PRODUCTION_COMMANDS:
        assert build_parser().parse_args(list(command)).handler is not None
