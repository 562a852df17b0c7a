"""deploy/envoy/envoy.yaml is valid Envoy API, routes to real clusters on real ports, retries only reads."""

import importlib
import re
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy_data_plane.envoy.config.bootstrap.v3 import Bootstrap

from apidevs.alerts.v1 import signal_service_pb2, user_service_pb2

DEPLOY_DIR = Path(__file__).resolve().parents[3] / "deploy"
ENVOY_CONFIG = DEPLOY_DIR / "envoy" / "envoy.yaml"
IDEMPOTENT_READS = {
    "/apidevs.alerts.v1.SignalService/GetSignal",
    "/apidevs.alerts.v1.SignalService/ListSignals",
    "/apidevs.alerts.v1.SignalService/GetUserStats",
    "/apidevs.alerts.v1.UserService/GetUser",
}


def envoy_config() -> dict[str, Any]:
    return yaml.safe_load(ENVOY_CONFIG.read_text())


def clusters() -> dict[str, dict[str, Any]]:
    return {cluster["name"]: cluster for cluster in envoy_config()["static_resources"]["clusters"]}


def listeners() -> dict[str, dict[str, Any]]:
    return {listener["name"]: listener for listener in envoy_config()["static_resources"]["listeners"]}


def routes(listener_name: str) -> list[dict[str, Any]]:
    manager = listeners()[listener_name]["filter_chains"][0]["filters"][0]["typed_config"]
    return [route for host in manager["route_config"]["virtual_hosts"] for route in host["routes"]]


def rpc_paths() -> set[str]:
    paths = set()
    for module, service_name in ((signal_service_pb2, "SignalService"), (user_service_pb2, "UserService")):
        service = module.DESCRIPTOR.services_by_name[service_name]
        paths |= {f"/{service.full_name}/{method.name}" for method in service.methods}
    return paths


def test_config_decodes_as_an_envoy_bootstrap() -> None:
    text = ENVOY_CONFIG.read_text()
    # Typed configs (google.protobuf.Any) decode only once their message module is imported.
    for type_name in set(re.findall(r"type\.googleapis\.com/([\w.]+)", text)):
        importlib.import_module(f"envoy_data_plane.{type_name.rsplit('.', 1)[0]}")
    # Envoy drops deprecated fields in later releases; the decoder warns about them.
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        bootstrap = Bootstrap.from_dict(yaml.safe_load(text))
    assert {cluster.name for cluster in bootstrap.static_resources.clusters} == {"edge", "signal"}


def test_unknown_fields_are_rejected_by_the_decoder() -> None:
    config = envoy_config()
    config["static_resources"]["clusters"][0]["conect_timeout"] = "1s"
    with pytest.raises(KeyError, match="conect_timeout"):
        Bootstrap.from_dict(config)


@pytest.mark.parametrize("listener_name", ["http_ingress", "grpc_signal"])
def test_routes_name_existing_clusters(listener_name: str) -> None:
    named = {route["route"]["cluster"] for route in routes(listener_name)}
    assert named <= set(clusters())


def test_cluster_endpoints_are_the_services_ports() -> None:
    compose = yaml.safe_load((DEPLOY_DIR / "compose.yaml").read_text())["services"]
    expected = {
        "edge": ("edge", int(compose["edge"]["environment"]["ALERTS_EDGE_PORT"])),
        "signal": ("signal", int(compose["signal"]["environment"]["ALERTS_SIGNAL_ADDR"].rpartition(":")[2])),
    }
    for name, cluster in clusters().items():
        endpoints = [
            endpoint["endpoint"]["address"]["socket_address"]
            for group in cluster["load_assignment"]["endpoints"]
            for endpoint in group["lb_endpoints"]
        ]
        assert [(address["address"], address["port_value"]) for address in endpoints] == [expected[name]]


def test_listener_ports_match_what_callers_dial() -> None:
    ports = {
        name: listener["address"]["socket_address"]["port_value"] for name, listener in listeners().items()
    }
    compose = yaml.safe_load((DEPLOY_DIR / "compose.yaml").read_text())["services"]
    assert compose["edge"]["environment"]["ALERTS_SIGNAL_ADDR"] == f"envoy:{ports['grpc_signal']}"
    assert f"{ports['http_ingress']}:{ports['http_ingress']}" in compose["envoy"]["ports"]


def test_signal_cluster_speaks_http2_and_checks_grpc_health() -> None:
    signal = clusters()["signal"]
    options = signal["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    assert "http2_protocol_options" in options["explicit_http_config"]
    assert signal["type"] == "STRICT_DNS", "every replica's address must become a host"
    assert "grpc_health_check" in signal["health_checks"][0]
    assert clusters()["edge"]["health_checks"][0]["http_health_check"]["path"] == "/health/ready"


def test_grpc_routes_name_real_rpcs() -> None:
    paths = {route["match"]["path"] for route in routes("grpc_signal") if "path" in route["match"]}
    assert paths <= rpc_paths()


def test_retries_only_on_idempotent_reads_and_on_all_of_them() -> None:
    retried = {
        route["match"].get("path") for route in routes("grpc_signal") if "retry_policy" in route["route"]
    }
    assert retried == IDEMPOTENT_READS
    assert not any("retry_policy" in route["route"] for route in routes("http_ingress"))


def test_every_route_has_a_timeout() -> None:
    for listener_name in ("http_ingress", "grpc_signal"):
        for route in routes(listener_name):
            assert "timeout" in route["route"], route["match"]


def test_webhook_route_answers_before_tradingview_gives_up() -> None:
    webhook = next(route for route in routes("http_ingress") if route["match"].get("prefix") == "/webhook/")
    assert float(webhook["route"]["timeout"].removesuffix("s")) < 3


def test_kubernetes_uses_the_same_config() -> None:
    assert (DEPLOY_DIR / "k8s" / "base" / "envoy.yaml").read_text() == ENVOY_CONFIG.read_text()
