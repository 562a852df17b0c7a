"""Each container of compose and of the rendered Kubernetes manifests (base and production) starts: its
environment, with placeholders for secrets, builds that service's settings in production mode, and the
values that wire the deployment together are the right ones."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from capture_service.settings import CaptureSettings
from edge.settings import EdgeSettings
from mesh.settings import CommonSettings
from notify_service.settings import NotifySettings
from signal_service.settings import DatabaseJobSettings, SignalSettings
from storage_service.settings import StorageSettings

DEPLOY_DIR = Path(__file__).resolve().parents[3] / "deploy"
K8S_BASE = DEPLOY_DIR / "k8s" / "base"
K8S_PRODUCTION = DEPLOY_DIR / "k8s" / "overlays" / "production"
SETTINGS_BY_COMMAND: dict[tuple[str, ...], type[CommonSettings]] = {
    ("serve", "edge"): EdgeSettings,
    ("serve", "signal"): SignalSettings,
    ("serve", "storage"): StorageSettings,
    ("serve", "capture"): CaptureSettings,
    ("serve", "notify"): NotifySettings,
    ("migrate",): DatabaseJobSettings,
    ("audit", "prune"): DatabaseJobSettings,
}
# Values of the shape each secret has in production, so that validation sees what it would see there.
SECRET_PLACEHOLDERS = {
    "ALERTS_DATABASE_URL": "postgresql+asyncpg://alerts:placeholder@db.internal:5432/alerts",
    "ALERTS_REDIS_URL": "redis://:placeholder@redis.internal:6379/0",
    "ALERTS_API_KEYS": "sha256:" + "ab" * 32 + "@role:platform",
    "ALERTS_SERVICE_API_KEY": "placeholder-service-key",
    "EDGE_SERVICE_API_KEY": "placeholder-edge-key",
    "WORKER_SERVICE_API_KEY": "placeholder-worker-key",
    "ALERTS_COOKIE_KEYS": "k1:" + "A" * 43 + "=",
    "ALERTS_MEDIA_SIGNING_KEY": "placeholder-media-signing-key",
    "ALERTS_TELEGRAM_BOT_TOKEN": "123456:placeholder-telegram-bot-token",
    "ALERTS_ACCESS_TOKEN_SIGNING_KEY": "placeholder-access-token-signing-key",
    "POSTGRES_PASSWORD": "placeholder",
}
# What each deployment must say, by where it runs.
EXPECTED = {
    "compose": {
        "public_url": "https://localhost",
        "bucket": "alerts-media",
        "signal_addr": "envoy:50051",
        "storage_addr": "storage:50052",
    },
    "base": {
        "public_url": "https://alerts.example.com",
        "bucket": "alerts-media",
        "signal_addr": "envoy-grpc:50051",
        "storage_addr": "storage:50052",
    },
    "production": {
        "public_url": "https://alerts.apidevs.io",
        "bucket": "apidevs-alerts-media-prod",
        "signal_addr": "envoy-grpc:50051",
        "storage_addr": "storage:50052",
    },
}
_INTERPOLATION = re.compile(r"\$\{(\w+)(?::([?-])([^}]*))?\}")


def _interpolate(value: str) -> str:
    """Compose's ${NAME}, ${NAME:-default} and ${NAME:?error} with no .env: secrets get placeholders."""

    def replace(match: re.Match[str]) -> str:
        name, kind, default = match.groups()
        if kind == "-":
            return default
        return SECRET_PLACEHOLDERS[name]

    return _INTERPOLATION.sub(replace, value)


def _compose_environment(service: dict[str, Any]) -> dict[str, str]:
    return {name: _interpolate(str(value)) for name, value in service["environment"].items()}


def compose_containers() -> dict[str, tuple[tuple[str, ...], dict[str, str]]]:
    services = yaml.safe_load((DEPLOY_DIR / "compose.yaml").read_text())["services"]
    return {
        name: (tuple(service["command"]), _compose_environment(service))
        for name, service in services.items()
        if tuple(service.get("command", ())) in SETTINGS_BY_COMMAND
    }


def kustomize(directory: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with built-in kustomize) is not installed")
    output = subprocess.run(
        [kubectl, "kustomize", str(directory)], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    return [doc for doc in yaml.safe_load_all(output) if doc is not None]


def _pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]


def kubernetes_containers(directory: Path) -> dict[str, tuple[tuple[str, ...], dict[str, str]]]:
    """Each alerts container's environment as the kubelet would build it. Secrets are the base templates'
    keys (production creates them out of band with the same keys), each with its placeholder."""
    documents = kustomize(directory)
    config_maps = {d["metadata"]["name"]: d["data"] for d in documents if d["kind"] == "ConfigMap"}
    secret_keys = {
        d["metadata"]["name"]: list(d["stringData"]) for d in kustomize(K8S_BASE) if d["kind"] == "Secret"
    }
    found = {}
    for workload in documents:
        if workload["kind"] not in ("Deployment", "StatefulSet", "Job", "CronJob"):
            continue
        for container in _pod_spec(workload)["containers"]:
            command = tuple(arg for arg in container.get("args", ()) if not arg.startswith("-"))
            if command not in SETTINGS_BY_COMMAND:
                continue
            environment: dict[str, str] = {}
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    environment |= config_maps[source["configMapRef"]["name"]]
                else:
                    keys = secret_keys[source["secretRef"]["name"]]
                    environment |= {key: SECRET_PLACEHOLDERS[key] for key in keys}
            for variable in container.get("env", []):
                if "value" in variable:
                    environment[variable["name"]] = variable["value"]
                else:
                    environment[variable["name"]] = SECRET_PLACEHOLDERS[variable["name"]]
            found[f"{workload['kind']}/{workload['metadata']['name']}/{container['name']}"] = (
                command,
                environment,
            )
    return found


def every_container() -> list[tuple[str, str, tuple[str, ...], dict[str, str]]]:
    sources = {
        "compose": compose_containers(),
        "base": kubernetes_containers(K8S_BASE),
        "production": kubernetes_containers(K8S_PRODUCTION),
    }
    return [
        (where, name, command, environment)
        for where, containers in sources.items()
        for name, (command, environment) in containers.items()
    ]


def build(command: tuple[str, ...], environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    import os

    for name in list(os.environ):
        if name.upper().startswith("ALERTS_"):
            monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return SETTINGS_BY_COMMAND[command]()


def test_every_source_has_every_service() -> None:
    for where in EXPECTED:
        commands = {command for w, _, command, _ in every_container() if w == where}
        assert commands >= set(SETTINGS_BY_COMMAND) - {("audit", "prune")}, where


@pytest.mark.parametrize(
    ("where", "name", "command", "environment"),
    every_container(),
    ids=[f"{where}:{name}" for where, name, _, _ in every_container()],
)
def test_container_settings_build_in_production_and_wire_the_deployment(
    where: str,
    name: str,
    command: tuple[str, ...],
    environment: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = build(command, environment, monkeypatch)
    expected = EXPECTED[where]
    assert settings.env == "production"
    if command == ("serve", "edge"):
        assert settings.public_url == expected["public_url"]
        assert settings.edge_host == "0.0.0.0", "Envoy reaches the edge from another pod or container"
        assert settings.edge_port == 8080
        assert settings.signal_addr == expected["signal_addr"]
    elif command == ("serve", "signal"):
        assert settings.public_url == expected["public_url"], "webhook URLs handed to users"
        assert settings.signal_addr == "0.0.0.0:50051"
        assert settings.storage_addr == expected["storage_addr"]
    elif command == ("serve", "storage"):
        assert settings.storage_addr == "0.0.0.0:50052"
        assert settings.storage_backend == "gcs"
        assert settings.storage_gcs_bucket == expected["bucket"]
    elif command in (("serve", "capture"), ("serve", "notify")):
        assert settings.signal_addr == expected["signal_addr"]
        assert settings.storage_addr == expected["storage_addr"]
    secrets_given = set(environment) & set(SECRET_PLACEHOLDERS)
    required = {f"ALERTS_{field.upper()}" for field in type(settings).required_in_production}
    assert secrets_given == required, f"{name} holds only the secrets it uses"


def test_a_misspelt_manifest_variable_would_fail_this_test(monkeypatch: pytest.MonkeyPatch) -> None:
    (_, environment) = compose_containers()["storage"]
    from mesh.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="ALERTS_GCS_BUCKET"):
        build(("serve", "storage"), environment | {"ALERTS_GCS_BUCKET": "alerts-media"}, monkeypatch)


def test_the_tradingview_client_certificate_override_builds_an_edge_that_believes_envoy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (command, environment) = compose_containers()["edge"]
    override = yaml.safe_load((DEPLOY_DIR / "compose.tradingview-client-certificate.yaml").read_text())
    extra = {
        name: _interpolate(str(value)) for name, value in override["services"]["edge"]["environment"].items()
    }
    settings = build(command, environment | extra, monkeypatch)
    assert settings.trust_forwarded_client_cert is True
    services = yaml.safe_load((DEPLOY_DIR / "compose.yaml").read_text())["services"]
    envoy_address = services["envoy"]["networks"]["default"]["ipv4_address"]
    assert settings.trusted_proxies == [f"{envoy_address}/32"], "only Envoy can set the header"
