"""deploy/k8s: manifests validate against the Kubernetes JSON schemas, and reference each other correctly."""

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from mesh.cli import PRODUCTION_COMMANDS
from mesh.queues import CAPTURE_QUEUES, dramatiq_namespace
from mesh.settings import CommonSettings

K8S_DIR = Path(__file__).resolve().parents[3] / "deploy" / "k8s"
BASE_DIR = K8S_DIR / "base"
PRODUCTION_DIR = K8S_DIR / "overlays" / "production"
# Native gRPC probes are GA since 1.27; validate against a version clusters actually run.
KUBERNETES_VERSION = "1.31"
ALERTS_COMMANDS = set(PRODUCTION_COMMANDS)
GRPC_SERVERS = {"signal": 50051, "storage": 50052}
# Kinds without an upstream schema (KEDA custom resources): checked by hand below.
CUSTOM_KINDS = {"ScaledObject", "TriggerAuthentication"}


def kustomization(directory: Path) -> dict[str, Any]:
    return yaml.safe_load((directory / "kustomization.yaml").read_text())


def base_documents() -> list[dict[str, Any]]:
    documents = []
    for name in kustomization(BASE_DIR)["resources"]:
        documents += [doc for doc in yaml.safe_load_all((BASE_DIR / name).read_text()) if doc is not None]
    return documents


def of_kind(documents: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in documents if doc["kind"] == kind}


def schema_errors(documents: list[dict[str, Any]]) -> list[str]:
    errors = []
    for doc in documents:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {error.message} at {list(error.path)}")
    return errors


def render(directory: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with built-in kustomize) is not installed")
    output = subprocess.run(
        [kubectl, "kustomize", str(directory)], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    return [doc for doc in yaml.safe_load_all(output) if doc is not None]


def containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    return deployment["spec"]["template"]["spec"]["containers"]


def test_every_listed_file_exists_and_every_manifest_is_listed() -> None:
    listed = set(kustomization(BASE_DIR)["resources"])
    generated = {
        name for generator in kustomization(BASE_DIR)["configMapGenerator"] for name in generator["files"]
    }
    assert [name for name in listed | generated if not (BASE_DIR / name).is_file()] == []
    on_disk = {path.name for path in BASE_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert on_disk - listed - generated == set(), "a manifest in base/ is not in kustomization.yaml"


def test_overlay_patches_exist_and_target_base_resources() -> None:
    overlay = kustomization(PRODUCTION_DIR)
    assert overlay["resources"] == ["../../base"]
    base_ids = {(doc["kind"], doc["metadata"]["name"]) for doc in base_documents()}
    for patch in overlay["patches"]:
        path = PRODUCTION_DIR / patch["path"]
        assert path.is_file(), patch["path"]
        for doc in yaml.safe_load_all(path.read_text()):
            assert (doc["kind"], doc["metadata"]["name"]) in base_ids, f"{patch['path']} patches nothing"


def test_base_manifests_validate_against_kubernetes_schemas() -> None:
    assert schema_errors(base_documents()) == []


def test_schema_validation_rejects_a_misspelled_field() -> None:
    deployment = of_kind(base_documents(), "Deployment")["edge"]
    containers(deployment)[0]["readinesProbe"] = containers(deployment)[0].pop("readinessProbe")
    assert schema_errors([deployment]) != []


@pytest.mark.parametrize("directory", [BASE_DIR, PRODUCTION_DIR], ids=["base", "production"])
def test_rendered_kustomization_validates(directory: Path) -> None:
    documents = render(directory)
    assert schema_errors(documents) == []
    assert {doc["metadata"].get("namespace") for doc in documents if doc["kind"] != "Namespace"} == {"alerts"}


def test_production_ships_no_secret_templates() -> None:
    documents = render(PRODUCTION_DIR)
    assert of_kind(documents, "Secret") == {}
    images = {c["image"] for d in of_kind(documents, "Deployment").values() for c in containers(d)}
    assert all(":latest" not in image for image in images if "apidevs" in image)


def test_secret_templates_hold_only_placeholders() -> None:
    for name, secret in of_kind(base_documents(), "Secret").items():
        assert "data" not in secret, f"{name}: use stringData placeholders"
        assert all(value.startswith("REPLACE_ME") for value in secret["stringData"].values()), name


def test_containers_run_real_alerts_commands() -> None:
    documents = base_documents()
    workloads = [*of_kind(documents, "Deployment").values()]
    workloads += [job for job in of_kind(documents, "Job").values()]
    commands = {}
    for workload in workloads:
        for container in containers(workload):
            if container["image"].startswith("apidevs-alerts"):
                commands[workload["metadata"]["name"]] = tuple(container["args"])
    assert set(commands.values()) == ALERTS_COMMANDS


def test_deployments_have_resources_and_probes() -> None:
    for name, deployment in of_kind(base_documents(), "Deployment").items():
        for container in containers(deployment):
            assert container["resources"]["requests"].keys() >= {"cpu", "memory"}, name
            assert "memory" in container["resources"]["limits"], name
            assert {"readinessProbe", "livenessProbe"} <= container.keys(), name


def test_grpc_servers_use_native_grpc_probes_on_their_listen_port() -> None:
    deployments = of_kind(base_documents(), "Deployment")
    for name, port in GRPC_SERVERS.items():
        (container,) = containers(deployments[name])
        environment = {item["name"]: item["value"] for item in container["env"]}
        assert environment[f"ALERTS_{name.upper()}_ADDR"] == f"0.0.0.0:{port}"
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert container[probe]["grpc"]["port"] == port, f"{name} {probe}"


def test_edge_probes_split_readiness_from_liveness() -> None:
    (container,) = containers(of_kind(base_documents(), "Deployment")["edge"])
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"


def test_pods_run_as_non_root() -> None:
    for name, deployment in of_kind(base_documents(), "Deployment").items():
        assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True, name
        for container in containers(deployment):
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name


def test_services_select_pods_and_name_container_ports() -> None:
    deployments = of_kind(base_documents(), "Deployment")
    for name, service in of_kind(base_documents(), "Service").items():
        selector = service["spec"]["selector"]
        targets = [
            d
            for d in deployments.values()
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert targets, f"service {name} selects no pods"
        port_names = {port["name"] for d in targets for c in containers(d) for port in c["ports"]}
        assert {port["targetPort"] for port in service["spec"]["ports"]} <= port_names, name


def test_envoy_upstreams_resolve_to_services_on_the_right_ports() -> None:
    envoy = yaml.safe_load((BASE_DIR / "envoy.yaml").read_text())
    services = of_kind(base_documents(), "Service")
    for cluster in envoy["static_resources"]["clusters"]:
        for group in cluster["load_assignment"]["endpoints"]:
            for endpoint in group["lb_endpoints"]:
                address = endpoint["endpoint"]["address"]["socket_address"]
                service = services[address["address"]]
                assert address["port_value"] in {port["port"] for port in service["spec"]["ports"]}
    # STRICT_DNS sees every signal pod only through a headless Service.
    assert services["signal"]["spec"]["clusterIP"] == "None"


def test_every_deployment_has_a_disruption_budget() -> None:
    documents = base_documents()
    budgets = of_kind(documents, "PodDisruptionBudget").values()
    for name, deployment in of_kind(documents, "Deployment").items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert any(b["spec"]["selector"]["matchLabels"].items() <= labels.items() for b in budgets), name


def test_autoscalers_target_edge_and_signal() -> None:
    documents = base_documents()
    deployments = of_kind(documents, "Deployment")
    targets = {
        hpa["spec"]["scaleTargetRef"]["name"]
        for hpa in of_kind(documents, "HorizontalPodAutoscaler").values()
    }
    assert targets == {"edge", "signal"}
    assert targets <= set(deployments)


def test_capture_scaled_object_structure() -> None:
    documents = base_documents()
    (scaled,) = of_kind(documents, "ScaledObject").values()
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] in of_kind(documents, "Deployment")
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (10, 20)
    triggers = spec["triggers"]
    assert {trigger["type"] for trigger in triggers} == {"redis"}
    assert {trigger["metadata"]["listName"] for trigger in triggers} == {
        f"{dramatiq_namespace(CommonSettings())}:{q}" for q in CAPTURE_QUEUES
    }
    assert all(int(trigger["metadata"]["listLength"]) > 0 for trigger in triggers)
    modifiers = spec["advanced"]["scalingModifiers"]
    assert set(modifiers["formula"].replace("+", " ").split()) == {trigger["name"] for trigger in triggers}
    assert int(modifiers["target"]) == 3
    assert modifiers["metricType"] == "AverageValue"


def test_keda_authentication_reads_existing_secret_keys() -> None:
    documents = base_documents()
    authentications = of_kind(documents, "TriggerAuthentication")
    secrets = of_kind(documents, "Secret")
    for trigger in of_kind(documents, "ScaledObject")["capture"]["spec"]["triggers"]:
        authentication = authentications[trigger["authenticationRef"]["name"]]
        for reference in authentication["spec"]["secretTargetRef"]:
            assert reference["parameter"] in {"address", "password", "username", "host", "port"}
            assert reference["key"] in secrets[reference["name"]]["stringData"]


def test_referenced_config_and_secrets_exist() -> None:
    documents = base_documents()
    names = {"ConfigMap": set(of_kind(documents, "ConfigMap")), "Secret": set(of_kind(documents, "Secret"))}
    names["ConfigMap"] |= {generator["name"] for generator in kustomization(BASE_DIR)["configMapGenerator"]}
    workloads = [*of_kind(documents, "Deployment").values(), *of_kind(documents, "Job").values()]
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        for container in pod["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in names["ConfigMap"]
                else:
                    assert source["secretRef"]["name"] in names["Secret"]
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in names["ConfigMap"]


def test_only_envoy_http_is_open_to_everyone() -> None:
    policies = of_kind(base_documents(), "NetworkPolicy")
    deny = policies["default-deny-ingress"]["spec"]
    assert deny["podSelector"] == {}
    assert deny["policyTypes"] == ["Ingress"]
    assert "ingress" not in deny
    open_rules = [
        (name, rule)
        for name, policy in policies.items()
        for rule in policy["spec"].get("ingress", [])
        if "from" not in rule
    ]
    assert [name for name, _ in open_rules] == ["envoy-http-from-anywhere"]
    (_, rule) = open_rules[0]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8000}]
    assert policies["envoy-http-from-anywhere"]["spec"]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "envoy"
    }


def test_edge_and_signal_accept_only_envoy() -> None:
    policies = of_kind(base_documents(), "NetworkPolicy")
    for name in ("edge-from-envoy", "signal-from-envoy"):
        (rule,) = policies[name]["spec"]["ingress"]
        assert rule["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "envoy"}}}]
