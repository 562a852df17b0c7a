"""deploy/k8s: manifests validate against the Kubernetes JSON schemas, and reference each other correctly."""

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from alerts.cli import PRODUCTION_COMMANDS, build_parser
from capture_service.settings import CaptureSettings
from edge.main import server_options
from edge.settings import EdgeSettings
from mesh.queues import CAPTURE_QUEUES, dramatiq_namespace
from mesh.settings import CommonSettings

K8S_DIR = Path(__file__).resolve().parents[3] / "deploy" / "k8s"
BASE_DIR = K8S_DIR / "base"
PRODUCTION_DIR = K8S_DIR / "overlays" / "production"
CLIENT_CERTIFICATE_COMPONENT = K8S_DIR / "components" / "tradingview-client-certificate"
# Native gRPC probes are GA since 1.27; validate against a version clusters actually run.
KUBERNETES_VERSION = "1.31"
ALERTS_COMMANDS = set(PRODUCTION_COMMANDS)
GRPC_SERVERS = {"signal": 50051, "storage": 50052}
# Kinds without an upstream schema (KEDA custom resources): checked by hand below.
CUSTOM_KINDS = {"ScaledObject", "TriggerAuthentication", "Certificate"}
SERVER_KINDS = ("Deployment", "StatefulSet")
WORKLOAD_KINDS = (*SERVER_KINDS, "Job", "CronJob")
HEALTHCHECK_IN_IMAGE = "/opt/alerts/healthcheck.py"


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


def of_kinds(documents: list[dict[str, Any]], kinds: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    return {name: doc for kind in kinds for name, doc in of_kind(documents, kind).items()}


def pod_template(workload: dict[str, Any]) -> dict[str, Any]:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    return pod_template(workload)["spec"]["containers"]


def alerts_command(args: list[str]) -> tuple[str, ...]:
    """The subcommand words of an `alerts` invocation, which must also parse as a whole (options included)."""
    assert build_parser().parse_args(args).handler is not None
    return tuple(arg for arg in args if not arg.startswith("-") and not arg.isdigit())


def edge() -> dict[str, Any]:
    return of_kind(base_documents(), "StatefulSet")["edge"]


def config_map() -> dict[str, str]:
    return of_kind(base_documents(), "ConfigMap")["alerts-config"]["data"]


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
    assert overlay["resources"] == ["../../base", "certificate.yaml"]
    base_ids = {(doc["kind"], doc["metadata"]["name"]) for doc in base_documents()}
    for patch in overlay["patches"]:
        path = PRODUCTION_DIR / patch["path"]
        assert path.is_file(), patch["path"]
        for doc in yaml.safe_load_all(path.read_text()):
            assert (doc["kind"], doc["metadata"]["name"]) in base_ids, f"{patch['path']} patches nothing"


def test_base_manifests_validate_against_kubernetes_schemas() -> None:
    assert schema_errors(base_documents()) == []


def test_schema_validation_rejects_a_misspelled_field() -> None:
    statefulset = edge()
    containers(statefulset)[0]["readinesProbe"] = containers(statefulset)[0].pop("readinessProbe")
    assert schema_errors([statefulset]) != []


@pytest.mark.parametrize("directory", [BASE_DIR, PRODUCTION_DIR], ids=["base", "production"])
def test_rendered_kustomization_validates(directory: Path) -> None:
    documents = render(directory)
    assert schema_errors(documents) == []
    assert {doc["metadata"].get("namespace") for doc in documents if doc["kind"] != "Namespace"} == {"alerts"}


def test_production_ships_no_secret_templates() -> None:
    documents = render(PRODUCTION_DIR)
    assert of_kind(documents, "Secret") == {}
    images = {c["image"] for w in of_kinds(documents, WORKLOAD_KINDS).values() for c in containers(w)}
    assert {image.split(":")[0] for image in images} >= {
        "ghcr.io/apidevs/alerts",
        "ghcr.io/apidevs/alerts-capture",
    }
    assert all(":latest" not in image for image in images if "apidevs" in image)


@pytest.mark.parametrize("directory", [BASE_DIR, PRODUCTION_DIR], ids=["base", "production"])
def test_every_image_has_a_fixed_tag(directory: Path) -> None:
    """A floating tag (`latest`, `v1.33-latest`) makes a rollback or a new node pull different code."""
    documents = render(directory)
    for workload in of_kinds(documents, WORKLOAD_KINDS).values():
        for container in containers(workload):
            name, _, tag = container["image"].rpartition(":")
            assert name, f"{container['image']} has no tag"
            assert "latest" not in tag, container["image"]


def test_production_patches_apply_to_the_edge_statefulset() -> None:
    documents = render(PRODUCTION_DIR)
    (container,) = containers(of_kind(documents, "StatefulSet")["edge"])
    assert of_kind(documents, "StatefulSet")["edge"]["spec"]["replicas"] == 3
    assert container["resources"]["requests"]["cpu"] == "500m"
    assert {item["name"]: item["value"] for item in container["env"]}[
        "ALERTS_TRUSTED_PROXIES"
    ] == "10.4.0.0/14"
    assert "lifecycle" in container, "the overlay's patch must merge into the container, not replace it"


def test_secret_templates_hold_only_placeholders() -> None:
    for name, secret in of_kind(base_documents(), "Secret").items():
        assert "data" not in secret, f"{name}: use stringData placeholders"
        assert all(value.startswith("REPLACE_ME") for value in secret["stringData"].values()), name


def test_containers_run_real_alerts_commands() -> None:
    commands = {}
    for name, workload in of_kinds(base_documents(), WORKLOAD_KINDS).items():
        for container in containers(workload):
            if container["image"].startswith("apidevs-alerts"):
                commands[name] = alerts_command(container["args"])
    assert set(commands.values()) == ALERTS_COMMANDS


def test_command_check_rejects_options_the_cli_does_not_take() -> None:
    assert alerts_command(["audit", "prune", "--retention-days", "30"]) == ("audit", "prune")
    with pytest.raises(SystemExit):
        alerts_command(["audit", "prune", "--keep-days", "30"])


def test_workloads_have_resources_and_servers_have_probes() -> None:
    documents = base_documents()
    for name, workload in of_kinds(documents, WORKLOAD_KINDS).items():
        for container in containers(workload):
            assert container["resources"]["requests"].keys() >= {"cpu", "memory"}, name
            assert "memory" in container["resources"]["limits"], name
            if workload["kind"] in SERVER_KINDS:
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
    (container,) = containers(edge())
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"


def test_pods_run_as_non_root() -> None:
    for name, workload in of_kinds(base_documents(), WORKLOAD_KINDS).items():
        assert pod_template(workload)["spec"]["securityContext"]["runAsNonRoot"] is True, name
        for container in containers(workload):
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name


def test_services_select_pods_and_name_container_ports() -> None:
    servers = of_kinds(base_documents(), SERVER_KINDS)
    for name, service in of_kind(base_documents(), "Service").items():
        selector = service["spec"]["selector"]
        targets = [
            d for d in servers.values() if selector.items() <= pod_template(d)["metadata"]["labels"].items()
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


def test_every_server_has_a_disruption_budget() -> None:
    documents = base_documents()
    budgets = of_kind(documents, "PodDisruptionBudget").values()
    for name, server in of_kinds(documents, SERVER_KINDS).items():
        labels = pod_template(server)["metadata"]["labels"]
        assert any(b["spec"]["selector"]["matchLabels"].items() <= labels.items() for b in budgets), name


def test_autoscalers_target_edge_and_signal() -> None:
    documents = base_documents()
    workloads = {(doc["kind"], doc["metadata"]["name"]) for doc in of_kinds(documents, SERVER_KINDS).values()}
    targets = {
        (hpa["spec"]["scaleTargetRef"]["kind"], hpa["spec"]["scaleTargetRef"]["name"])
        for hpa in of_kind(documents, "HorizontalPodAutoscaler").values()
    }
    assert {name for _, name in targets} == {"edge", "signal"}
    assert targets <= workloads, "an autoscaler names the wrong kind or a missing workload"


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
    for workload in of_kinds(documents, WORKLOAD_KINDS).values():
        pod = pod_template(workload)["spec"]
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
    # HTTPS, and the HTTP listener that only redirects to it (deploy/envoy/envoy.yaml).
    assert rule["ports"] == [{"protocol": "TCP", "port": 8443}, {"protocol": "TCP", "port": 8000}]
    assert policies["envoy-http-from-anywhere"]["spec"]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "envoy"
    }


def test_edge_and_signal_accept_only_envoy() -> None:
    policies = of_kind(base_documents(), "NetworkPolicy")
    for name in ("edge-from-envoy", "signal-from-envoy"):
        (rule,) = policies[name]["spec"]["ingress"]
        assert rule["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "envoy"}}}]


def test_edge_spool_lives_on_a_claim_that_follows_the_pod() -> None:
    statefulset = edge()
    spec = statefulset["spec"]
    (container,) = containers(statefulset)
    (claim,) = spec["volumeClaimTemplates"]
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == config_map()["ALERTS_DATA_DIR"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert spec["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    assert spec["podManagementPolicy"] == "Parallel"


def test_edge_volume_holds_a_full_spool_and_its_write_ahead_log() -> None:
    (claim,) = edge()["spec"]["volumeClaimTemplates"]
    size = claim["spec"]["resources"]["requests"]["storage"]
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", size).groups()
    size_bytes = int(number) * 1024 ** {"Mi": 2, "Gi": 3}[unit]
    spool_max_bytes = int(config_map().get("ALERTS_SPOOL_MAX_BYTES", EdgeSettings().spool_max_bytes))
    assert size_bytes >= 2 * spool_max_bytes


def test_edge_has_a_headless_governing_service_and_envoy_a_cluster_ip_one() -> None:
    services = of_kind(base_documents(), "Service")
    governing = services[edge()["spec"]["serviceName"]]
    assert governing["spec"]["clusterIP"] == "None"
    assert governing["spec"]["selector"].items() <= pod_template(edge())["metadata"]["labels"].items()
    assert "clusterIP" not in services["edge"]["spec"], "Envoy's upstream balances over one virtual IP"


def test_edge_waits_for_an_empty_spool_within_its_grace_period() -> None:
    statefulset = edge()
    (container,) = containers(statefulset)
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[:3] == ["python", HEALTHCHECK_IN_IMAGE, "spool-drained"]
    url, options = command[3], command[4:]
    http_port = next(port["containerPort"] for port in container["ports"] if port["name"] == "http")
    assert url == f"http://127.0.0.1:{http_port}/metrics"
    assert http_port == int(config_map()["ALERTS_EDGE_PORT"])
    assert options[0] == "--wait"
    uvicorn_shutdown_seconds = server_options(EdgeSettings())["timeout_graceful_shutdown"]
    grace_seconds = pod_template(statefulset)["spec"]["terminationGracePeriodSeconds"]
    assert float(options[1]) + uvicorn_shutdown_seconds < grace_seconds
    assert float(options[1]) >= 60, "a drain after an outage needs time"


def test_audit_prune_runs_daily_one_at_a_time() -> None:
    (cronjob,) = of_kind(base_documents(), "CronJob").values()
    assert re.fullmatch(r"\d+ \d+ \* \* \*", cronjob["spec"]["schedule"]), "once a day at a fixed time"
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    (container,) = containers(cronjob)
    assert alerts_command(container["args"]) == ("audit", "prune")
    assert pod_template(cronjob)["spec"]["restartPolicy"] in {"Never", "OnFailure"}


def envoy_listener_ports() -> dict[str, int]:
    config = yaml.safe_load((BASE_DIR / "envoy.yaml").read_text())
    return {
        listener["name"]: listener["address"]["socket_address"]["port_value"]
        for listener in config["static_resources"]["listeners"]
    }


def envoy_container(documents: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    deployment = of_kind(documents, "Deployment")["envoy"]
    (container,) = containers(deployment)
    return container, pod_template(deployment)["spec"]


def envoy_config_map(documents: list[dict[str, Any]]) -> dict[str, Any]:
    """The generated ConfigMap (its name carries a content hash) that Envoy's pods mount."""
    _, pod = envoy_container(documents)
    (name,) = [volume["configMap"]["name"] for volume in pod["volumes"] if "configMap" in volume]
    return of_kind(documents, "ConfigMap")[name]


def mounted_secrets(documents: list[dict[str, Any]]) -> dict[str, str]:
    """Mount path -> Secret name, for Envoy's container."""
    container, pod = envoy_container(documents)
    secrets = {
        volume["name"]: volume["secret"]["secretName"] for volume in pod["volumes"] if "secret" in volume
    }
    return {
        mount["mountPath"]: secrets[mount["name"]]
        for mount in container["volumeMounts"]
        if mount["name"] in secrets
    }


def test_tradingview_reaches_https_on_443_and_http_only_redirects() -> None:
    ports = envoy_listener_ports()
    container, _ = envoy_container(base_documents())
    named = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert named == {
        "https": ports["https_ingress"],
        "http": ports["http_redirect"],
        "grpc": ports["grpc_signal"],
    }
    service = of_kind(base_documents(), "Service")["envoy"]
    assert {port["port"]: port["targetPort"] for port in service["spec"]["ports"]} == {
        443: "https",
        80: "http",
    }
    assert container["readinessProbe"]["tcpSocket"]["port"] == "https"


def test_envoy_serves_the_certificate_from_the_public_tls_secret() -> None:
    sds = yaml.safe_load((BASE_DIR / "public-certificate.sds.yaml").read_text())["resources"][0]
    watched = sds["tls_certificate"]["watched_directory"]["path"]
    assert mounted_secrets(base_documents()) == {watched: "alerts-public-tls"}
    secret = of_kind(base_documents(), "Secret")["alerts-public-tls"]
    assert secret["type"] == "kubernetes.io/tls"
    filenames = {
        Path(sds["tls_certificate"][key]["filename"]).name for key in ("certificate_chain", "private_key")
    }
    assert filenames == set(secret["stringData"])


def test_production_gets_its_certificate_from_cert_manager_for_the_public_host() -> None:
    documents = render(PRODUCTION_DIR)
    (certificate,) = of_kind(documents, "Certificate").values()
    assert certificate["apiVersion"] == "cert-manager.io/v1"
    assert certificate["spec"]["secretName"] == "alerts-public-tls"
    assert certificate["spec"]["secretName"] in mounted_secrets(documents).values()
    assert certificate["spec"]["issuerRef"]["kind"] in {"Issuer", "ClusterIssuer"}
    public_url = of_kind(documents, "ConfigMap")["alerts-config"]["data"]["ALERTS_PUBLIC_URL"]
    assert urlsplit(public_url).scheme == "https"
    assert urlsplit(public_url).hostname in certificate["spec"]["dnsNames"]


def test_the_tradingview_client_certificate_component_wires_envoy_and_the_edge(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [os.path.relpath(BASE_DIR, tmp_path)],
                "components": [os.path.relpath(CLIENT_CERTIFICATE_COMPONENT, tmp_path)],
            }
        )
    )
    documents = render(tmp_path)
    assert schema_errors(documents) == []
    envoy = yaml.safe_load(envoy_config_map(documents)["data"]["envoy.yaml"])
    https = next(item for item in envoy["static_resources"]["listeners"] if item["name"] == "https_ingress")
    context = https["filter_chains"][0]["transport_socket"]["typed_config"]["common_tls_context"]
    ca_directory = str(Path(context["validation_context"]["trusted_ca"]["filename"]).parent)
    assert mounted_secrets(documents)[ca_directory] == "alerts-tradingview-ca"
    (edge_container,) = containers(of_kind(documents, "StatefulSet")["edge"])
    environment = {item["name"]: item["value"] for item in edge_container["env"]}
    assert environment["ALERTS_TRUST_FORWARDED_CLIENT_CERT"] == "true"
    assert environment["ALERTS_TRUSTED_PROXIES"], "the edge believes the header only from Envoy"
    # Off by default: base alone neither asks for client certificates nor believes the header.
    base_envoy = yaml.safe_load(envoy_config_map(render(BASE_DIR))["data"]["envoy.yaml"])
    assert "SANITIZE_SET" not in yaml.safe_dump(base_envoy)


PRIVATE_RANGES = {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"}
# Where each workload may connect, besides the cluster DNS: ("pod", app name, port) inside the namespace,
# ("private", port) for the managed PostgreSQL and Redis, ("public", port) for the internet but no private
# range, ("metadata", port) for the node's metadata server.
EXPECTED_EGRESS = {
    "envoy": {("pod", "edge", 8080), ("pod", "signal", 50051)},
    "edge": {("pod", "envoy", 50051), ("pod", "storage", 50052)},
    "signal": {("private", 5432), ("private", 6379), ("pod", "storage", 50052)},
    "capture": {("public", 443), ("private", 6379), ("pod", "envoy", 50051), ("pod", "storage", 50052)},
    "notify": {("public", 443), ("private", 6379), ("pod", "envoy", 50051), ("pod", "storage", 50052)},
    "storage": {("public", 443), ("metadata", 80), ("metadata", 988)},
    "migrate": {("private", 5432)},
    "audit-prune": {("private", 5432)},
}


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", expression
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def workload_labels() -> dict[str, dict[str, str]]:
    return {
        pod_template(workload)["metadata"]["labels"]["app.kubernetes.io/name"]: pod_template(workload)[
            "metadata"
        ]["labels"]
        for workload in of_kinds(base_documents(), WORKLOAD_KINDS).values()
    }


def peer_kind(peer: dict[str, Any]) -> tuple[str, ...]:
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        if block["cidr"] == "0.0.0.0/0":
            assert set(block["except"]) == PRIVATE_RANGES, (
                "the internet, never the cluster or the metadata server"
            )
            return ("public",)
        if block["cidr"].startswith("169.254."):
            return ("metadata",)
        return ("private",)
    if "namespaceSelector" in peer:
        assert peer["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
        return ("dns",)
    return ("pod", peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"])


def allowed_egress(labels: dict[str, str]) -> set[tuple[Any, ...]]:
    allowed = set()
    for policy in of_kind(base_documents(), "NetworkPolicy").values():
        if "Egress" not in policy["spec"]["policyTypes"] or not selects(
            policy["spec"]["podSelector"], labels
        ):
            continue
        for rule in policy["spec"].get("egress", []):
            assert rule.get("ports"), f"{policy['metadata']['name']}: an egress rule without ports"
            assert rule.get("to"), f"{policy['metadata']['name']}: an egress rule to anywhere"
            for peer in rule["to"]:
                allowed |= {(*peer_kind(peer), port["port"]) for port in rule["ports"]}
    return allowed


def test_egress_is_denied_unless_allowed() -> None:
    deny = of_kind(base_documents(), "NetworkPolicy")["default-deny-egress"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Egress"]}


@pytest.mark.parametrize("name", sorted(EXPECTED_EGRESS))
def test_each_workload_reaches_only_what_it_uses(name: str) -> None:
    allowed = allowed_egress(workload_labels()[name])
    assert {("dns", 53)} <= allowed, "names must resolve"
    assert allowed - {("dns", 53)} == EXPECTED_EGRESS[name]


def test_every_workload_has_an_egress_allowance() -> None:
    assert set(workload_labels()) == set(EXPECTED_EGRESS)


def test_egress_ports_are_the_ports_the_manifests_dial() -> None:
    """The expected ports are the ones in the addresses the services are given."""
    config = config_map()
    services = of_kind(base_documents(), "Service")

    def pod_port(address: str) -> tuple[str, int]:
        host, _, port = address.rpartition(":")
        service = services[host]
        (target,) = [item["targetPort"] for item in service["spec"]["ports"] if item["port"] == int(port)]
        (name,) = [
            workload_name
            for workload_name, labels in workload_labels().items()
            if selects({"matchLabels": service["spec"]["selector"]}, labels)
        ]
        workload = of_kinds(base_documents(), SERVER_KINDS)[name]
        (number,) = [
            p["containerPort"] for c in containers(workload) for p in c["ports"] if p["name"] == target
        ]
        return name, number

    assert ("pod", *pod_port(config["ALERTS_SIGNAL_ADDR"])) in EXPECTED_EGRESS["capture"]
    assert ("pod", *pod_port(config["ALERTS_SIGNAL_ADDR"])) in EXPECTED_EGRESS["edge"]
    assert ("pod", *pod_port(config["ALERTS_STORAGE_ADDR"])) in EXPECTED_EGRESS["signal"]
    assert ("pod", "edge", int(config["ALERTS_EDGE_PORT"])) in EXPECTED_EGRESS["envoy"]
    assert urlsplit(config["ALERTS_TRADINGVIEW_URL"]).port in {None, 443}
    secrets = of_kind(base_documents(), "Secret")
    database = urlsplit(
        secrets["alerts-database"]["stringData"]["ALERTS_DATABASE_URL"].removeprefix("REPLACE_ME_")
    )
    redis = urlsplit(secrets["alerts-capture"]["stringData"]["ALERTS_REDIS_URL"].removeprefix("REPLACE_ME_"))
    assert ("private", database.port) in EXPECTED_EGRESS["migrate"]
    assert ("private", redis.port) in EXPECTED_EGRESS["capture"]


@pytest.mark.parametrize("name", sorted(EXPECTED_EGRESS))
def test_what_a_workload_may_reach_in_the_namespace_lets_it_in(name: str) -> None:
    labels = workload_labels()
    policies = of_kind(base_documents(), "NetworkPolicy").values()
    for kind, *target in EXPECTED_EGRESS[name]:
        if kind != "pod":
            continue
        target_name, port = target
        admitted = any(
            any(
                port in {item["port"] for item in rule["ports"]}
                and (
                    "from" not in rule
                    or any(
                        selects(peer.get("podSelector", {"matchLabels": {"_": "_"}}), labels[name])
                        for peer in rule["from"]
                    )
                )
                for rule in policy["spec"].get("ingress", [])
            )
            for policy in policies
            if "Ingress" in policy["spec"]["policyTypes"]
            and selects(policy["spec"]["podSelector"], labels[target_name])
        )
        assert admitted, f"{name} may connect to {target_name}:{port}, but {target_name} does not let it in"


def test_capture_liveness_reflects_the_worker_not_only_its_metrics_server() -> None:
    (container,) = containers(of_kind(base_documents(), "Deployment")["capture"])
    command = container["livenessProbe"]["exec"]["command"]
    assert command[:3] == ["python", HEALTHCHECK_IN_IMAGE, "capture-alive"]
    metrics_port = {port["name"]: port["containerPort"] for port in container["ports"]}["metrics"]
    assert command[3] == f"http://127.0.0.1:{metrics_port}/metrics"
    assert int(config_map()["ALERTS_METRICS_PORT"]) == metrics_port
    max_job_age = float(command[command.index("--max-job-age") + 1])
    assert max_job_age > CaptureSettings().capture_time_limit_seconds, "a job inside its limit is not stuck"
