"""deploy/envoy/ is valid Envoy API, routes to real clusters on real ports, retries only reads, serves the
public over TLS only and only on public routes, and lets nobody but Envoy set X-Forwarded-Client-Cert."""

import copy
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
CLIENT_CERTIFICATE_CONFIG = DEPLOY_DIR / "envoy" / "envoy-tradingview-client-certificate.yaml"
SDS_FILE = DEPLOY_DIR / "envoy" / "public-certificate.sds.yaml"
K8S_DIR = DEPLOY_DIR / "k8s"
# Every path the edge serves, by whether the internet may reach it through Envoy.
PUBLIC_PATHS = [
    "/webhook/u/whk_token",
    "/api/users/u1/stats",
    "/api/users/u1/signals",
    "/api/users/u1/events",
    "/ui",
    "/ui/static/app.js",
    "/media/screenshots/a.png",
    "/health/live",
]
INTERNAL_PATHS = ["/metrics", "/health", "/health/ready", "/schema", "/schema/openapi.json", "/", "/uix"]
TRADINGVIEW_SAN = "webhook-server@tradingview.com"
IDEMPOTENT_READS = {
    "/apidevs.alerts.v1.SignalService/GetSignal",
    "/apidevs.alerts.v1.SignalService/ListSignals",
    "/apidevs.alerts.v1.SignalService/GetUserStats",
    "/apidevs.alerts.v1.UserService/GetUser",
}


def envoy_config(path: Path = ENVOY_CONFIG) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def clusters() -> dict[str, dict[str, Any]]:
    return {cluster["name"]: cluster for cluster in envoy_config()["static_resources"]["clusters"]}


def listeners(path: Path = ENVOY_CONFIG) -> dict[str, dict[str, Any]]:
    return {listener["name"]: listener for listener in envoy_config(path)["static_resources"]["listeners"]}


def connection_manager(listener_name: str, path: Path = ENVOY_CONFIG) -> dict[str, Any]:
    return listeners(path)[listener_name]["filter_chains"][0]["filters"][0]["typed_config"]


def tls_context(path: Path = ENVOY_CONFIG) -> dict[str, Any]:
    return listeners(path)["https_ingress"]["filter_chains"][0]["transport_socket"]["typed_config"]


def routes(listener_name: str) -> list[dict[str, Any]]:
    manager = connection_manager(listener_name)
    return [route for host in manager["route_config"]["virtual_hosts"] for route in host["routes"]]


def matching_route(listener_name: str, path: str) -> dict[str, Any] | None:
    """The route Envoy picks for a path: the first whose match (prefix, exact path, regex) fits."""
    for route in routes(listener_name):
        match = route["match"]
        if "prefix" in match and path.startswith(match["prefix"]):
            return route
        if "path" in match and path == match["path"]:
            return route
        if "safe_regex" in match and re.fullmatch(match["safe_regex"]["regex"], path):
            return route
    return None


def import_typed_config_modules(text: str) -> None:
    # Typed configs (google.protobuf.Any) decode only once their message module is imported.
    for type_name in set(re.findall(r"type\.googleapis\.com/([\w.]+)", text)):
        importlib.import_module(f"envoy_data_plane.{type_name.rsplit('.', 1)[0]}")


def decode(text: str) -> Bootstrap:
    import_typed_config_modules(text)
    # Envoy drops deprecated fields in later releases; the decoder warns about them.
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        return Bootstrap.from_dict(yaml.safe_load(text))


def rpc_paths() -> set[str]:
    paths = set()
    for module, service_name in ((signal_service_pb2, "SignalService"), (user_service_pb2, "UserService")):
        service = module.DESCRIPTOR.services_by_name[service_name]
        paths |= {f"/{service.full_name}/{method.name}" for method in service.methods}
    return paths


@pytest.mark.parametrize("path", [ENVOY_CONFIG, CLIENT_CERTIFICATE_CONFIG], ids=lambda path: path.name)
def test_config_decodes_as_an_envoy_bootstrap(path: Path) -> None:
    bootstrap = decode(path.read_text())
    assert {cluster.name for cluster in bootstrap.static_resources.clusters} == {"edge", "signal"}


def test_the_certificate_file_decodes_as_an_sds_secret_envoy_reads() -> None:
    (resource,) = yaml.safe_load(SDS_FILE.read_text())["resources"]
    type_name = resource.pop("@type").removeprefix("type.googleapis.com/")
    module = importlib.import_module(f"envoy_data_plane.{type_name.rsplit('.', 1)[0]}")
    secret = getattr(module, type_name.rsplit(".", 1)[1]).from_dict(resource)
    (sds,) = tls_context()["common_tls_context"]["tls_certificate_sds_secret_configs"]
    assert secret.name == sds["name"]
    assert sds["sds_config"]["path_config_source"]["path"] == f"/etc/envoy/{SDS_FILE.name}"
    certificate = secret.tls_certificate
    # A renewed Secret lands in this directory; Envoy watching it serves the new pair without a restart.
    directory = certificate.watched_directory.path
    assert Path(certificate.certificate_chain.filename).parent == Path(directory)
    assert Path(certificate.private_key.filename).parent == Path(directory)


def test_unknown_fields_are_rejected_by_the_decoder() -> None:
    import_typed_config_modules(ENVOY_CONFIG.read_text())
    config = envoy_config()
    config["static_resources"]["clusters"][0]["conect_timeout"] = "1s"
    with pytest.raises(KeyError, match="conect_timeout"):
        Bootstrap.from_dict(config)


@pytest.mark.parametrize("listener_name", ["https_ingress", "grpc_signal"])
def test_routes_name_existing_clusters(listener_name: str) -> None:
    named = {route["route"]["cluster"] for route in routes(listener_name) if "route" in route}
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
    # TradingView posts to 80 and 443 only.
    assert f"443:{ports['https_ingress']}" in compose["envoy"]["ports"]
    assert f"80:{ports['http_redirect']}" in compose["envoy"]["ports"]
    assert f"127.0.0.1:{ports['grpc_signal']}:{ports['grpc_signal']}" in compose["envoy"]["ports"]


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
    assert not any("retry_policy" in route.get("route", {}) for route in routes("https_ingress"))


def test_every_route_to_a_cluster_has_a_timeout() -> None:
    for listener_name in ("https_ingress", "grpc_signal"):
        for route in routes(listener_name):
            if "route" in route:
                assert "timeout" in route["route"], route["match"]


def test_webhook_route_answers_before_tradingview_gives_up() -> None:
    webhook = matching_route("https_ingress", "/webhook/u/whk_token")
    assert float(webhook["route"]["timeout"].removesuffix("s")) < 3


@pytest.mark.parametrize("path", PUBLIC_PATHS)
def test_public_paths_reach_the_edge_over_tls(path: str) -> None:
    route = matching_route("https_ingress", path)
    assert route is not None, path
    assert route.get("route", {}).get("cluster") == "edge", path


@pytest.mark.parametrize("path", INTERNAL_PATHS)
def test_internal_paths_are_not_routed_to_the_internet(path: str) -> None:
    route = matching_route("https_ingress", path)
    assert route is not None, path
    assert "route" not in route, path
    assert route["direct_response"]["status"] == 404


def test_the_live_events_stream_is_not_cut_by_a_request_timeout() -> None:
    route = matching_route("https_ingress", "/api/users/u1/events")["route"]
    assert route["timeout"] == "0s"
    assert matching_route("https_ingress", "/api/users/u1/events/x")["route"]["timeout"] != "0s"


def test_plain_http_only_redirects_to_https() -> None:
    redirects = routes("http_redirect")
    assert redirects, "the HTTP listener must answer with a redirect"
    for route in redirects:
        assert set(route) == {"match", "redirect"}, "HTTP must not reach any cluster"
        assert route["redirect"]["https_redirect"] is True
    assert matching_route("http_redirect", "/webhook/u/whk_token") is not None


def test_the_public_listener_is_tls_only_with_a_modern_floor() -> None:
    (chain,) = listeners()["https_ingress"]["filter_chains"]
    assert chain["transport_socket"]["name"] == "envoy.transport_sockets.tls"
    assert tls_context()["common_tls_context"]["tls_params"]["tls_minimum_protocol_version"] in {
        "TLSv1_2",
        "TLSv1_3",
    }
    assert connection_manager("https_ingress")["use_remote_address"] is True


def test_only_envoy_can_set_the_client_certificate_header() -> None:
    """By default no client certificate is asked for and a client's X-Forwarded-Client-Cert is dropped."""
    assert connection_manager("https_ingress")["forward_client_cert_details"] == "SANITIZE"
    assert "validation_context" not in tls_context()["common_tls_context"]
    variant = connection_manager("https_ingress", CLIENT_CERTIFICATE_CONFIG)
    # SANITIZE_SET replaces a client's copy, and writes one only for a certificate Envoy verified.
    assert variant["forward_client_cert_details"] == "SANITIZE_SET"
    assert variant["set_current_client_cert_details"] == {"subject": True}


def test_the_tradingview_option_verifies_chain_and_san_without_locking_out_browsers() -> None:
    context = tls_context(CLIENT_CERTIFICATE_CONFIG)
    validation = context["common_tls_context"]["validation_context"]
    assert validation["trusted_ca"]["filename"].startswith("/etc/envoy-tradingview-ca/")
    assert validation["match_typed_subject_alt_names"] == [
        {"san_type": "EMAIL", "matcher": {"exact": TRADINGVIEW_SAN}}
    ]
    # The UI and the platform's REST calls come without a certificate.
    assert context["require_client_certificate"] is False


def test_the_tradingview_option_changes_nothing_else() -> None:
    variant = envoy_config(CLIENT_CERTIFICATE_CONFIG)
    expected = copy.deepcopy(envoy_config())
    https = next(
        listener
        for listener in expected["static_resources"]["listeners"]
        if listener["name"] == "https_ingress"
    )
    chain = https["filter_chains"][0]
    context = chain["transport_socket"]["typed_config"]
    variant_https = listeners(CLIENT_CERTIFICATE_CONFIG)["https_ingress"]["filter_chains"][0]
    variant_context = variant_https["transport_socket"]["typed_config"]
    context["common_tls_context"]["validation_context"] = variant_context["common_tls_context"][
        "validation_context"
    ]
    context["require_client_certificate"] = variant_context["require_client_certificate"]
    manager = chain["filters"][0]["typed_config"]
    manager["forward_client_cert_details"] = "SANITIZE_SET"
    manager["set_current_client_cert_details"] = {"subject": True}
    assert variant == expected


@pytest.mark.parametrize(
    ("copy_path", "original"),
    [
        (K8S_DIR / "base" / "envoy.yaml", ENVOY_CONFIG),
        (K8S_DIR / "base" / SDS_FILE.name, SDS_FILE),
        (K8S_DIR / "components" / "tradingview-client-certificate" / "envoy.yaml", CLIENT_CERTIFICATE_CONFIG),
    ],
    ids=["envoy", "sds", "tradingview-client-certificate"],
)
def test_kubernetes_uses_the_same_config(copy_path: Path, original: Path) -> None:
    assert copy_path.read_text() == original.read_text()


def test_compose_mounts_what_the_config_reads() -> None:
    compose = yaml.safe_load((DEPLOY_DIR / "compose.yaml").read_text())["services"]
    targets = {volume.split(":")[1] for volume in compose["envoy"]["volumes"]}
    assert {"/etc/envoy/envoy.yaml", f"/etc/envoy/{SDS_FILE.name}", "/etc/envoy-tls"} <= targets
    override = yaml.safe_load((DEPLOY_DIR / "compose.tradingview-client-certificate.yaml").read_text())
    mounts = dict(volume.rsplit(":", 2)[:2] for volume in override["services"]["envoy"]["volumes"])
    assert mounts["./envoy/" + CLIENT_CERTIFICATE_CONFIG.name] == "/etc/envoy/envoy.yaml"
    ca = tls_context(CLIENT_CERTIFICATE_CONFIG)["common_tls_context"]["validation_context"]["trusted_ca"]
    assert ca["filename"] in mounts.values()
    assert override["services"]["edge"]["environment"]["ALERTS_TRUST_FORWARDED_CLIENT_CERT"] == "true"
