"""The edge's OpenAPI document says what the routes do (tests/e2e/test_openapi_client.py drives a client
generated from it; tests/e2e/test_edge_process.py checks live answers against it)."""

from __future__ import annotations

from typing import Any

import pytest

from edge.app import create_app
from edge.settings import EdgeSettings

ERROR_REF = "#/components/schemas/ErrorOut"
OPERATION_IDS = {
    ("post", "/webhook/u/{token}"): "ingestWebhook",
    ("get", "/health"): "health",
    ("get", "/health/live"): "liveness",
    ("get", "/health/ready"): "readiness",
    ("get", "/media/{key}"): "getMedia",
    ("get", "/api/users/{user_id}/stats"): "getUserStats",
    ("get", "/api/users/{user_id}/signals"): "listSignals",
    ("get", "/api/users/{user_id}/signals/{signal_id}"): "getSignal",
    ("patch", "/api/users/{user_id}/signals/{signal_id}"): "updateSignalOutcome",
    ("get", "/api/users/{user_id}/events"): "streamUserEvents",
}
# Not errors: the health report itself (it names the dependency that is down), and Not Modified.
NOT_ERROR_SHAPED = {("/health", "503"), ("/health/ready", "503"), ("/media/{key}", "304")}
# What the services behind the edge can answer besides a refusal of the caller (/media answers storage's
# other refusals 502, so never 429).
FROM_THE_SERVICES = {"502", "503"}
FROM_THE_SIGNAL_SERVICE = {"401", "403", "404", "429"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return create_app(EdgeSettings()).openapi_schema.to_schema()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in {"get", "post", "patch", "put", "delete"}
    ]


def test_every_operation_has_a_readable_id(document: dict[str, Any]) -> None:
    assert {(method, path): op["operationId"] for method, path, op in operations(document)} == OPERATION_IDS


def test_every_error_answer_is_declared_in_the_one_shape(document: dict[str, Any]) -> None:
    assert document["components"]["schemas"]["ErrorOut"] == {
        "type": "object",
        "title": "ErrorOut",
        "properties": {
            "success": {"type": "boolean"},
            "error": {"type": "string"},
            "message": {"type": "string"},
        },
        "required": ["error", "success"],
    }
    for _, path, operation in operations(document):
        responses = operation["responses"]
        assert {"431", "500"} <= set(responses), path
        if operation.get("parameters") or operation.get("requestBody"):
            assert "400" in responses, path
        for status, response in responses.items():
            if status.startswith("2") or (path, status) in NOT_ERROR_SHAPED:
                continue
            assert response["content"] == {"application/json": {"schema": {"$ref": ERROR_REF}}}, (
                path,
                status,
            )


def test_error_answers_declare_the_headers_they_carry(document: dict[str, Any]) -> None:
    for _, path, operation in operations(document):
        for status, response in operation["responses"].items():
            if (path, status) in NOT_ERROR_SHAPED:
                assert "headers" not in response or not response["headers"], (path, status)
            elif status in {"429", "503"}:
                assert set(response["headers"]) == {"Retry-After"}, (path, status)
            elif status == "401":
                assert response["headers"]["WWW-Authenticate"]["required"] is True, path


def test_the_routes_behind_a_service_declare_its_failures(document: dict[str, Any]) -> None:
    for _, path, operation in operations(document):
        if path.startswith(("/api/", "/webhook/", "/media/")):
            assert set(operation["responses"]) >= FROM_THE_SERVICES, path
        if path.startswith(("/api/", "/webhook/")):
            assert set(operation["responses"]) >= FROM_THE_SIGNAL_SERVICE, path


def test_no_parameter_is_declared_nullable(document: dict[str, Any]) -> None:
    """A query string or header carries a value or nothing; a declared null only misleads clients."""
    for _, path, operation in operations(document):
        for parameter in operation.get("parameters", []):
            assert not admits_null(parameter["schema"]), (path, parameter["name"])


def admits_null(schema: dict[str, Any]) -> bool:
    types = schema.get("type")
    return (
        types == "null"
        or (isinstance(types, list) and "null" in types)
        or None in schema.get("enum", [])
        or any(admits_null(branch) for branch in schema.get("oneOf", []) + schema.get("anyOf", []))
    )


def test_every_success_says_what_it_carries(document: dict[str, Any]) -> None:
    for _, path, operation in operations(document):
        for status, response in operation["responses"].items():
            for media_type, content in (response.get("content") or {}).items():
                assert content["schema"], (path, status, media_type)


def test_the_webhook_declares_the_bodies_tradingview_sends(document: dict[str, Any]) -> None:
    body = document["paths"]["/webhook/u/{token}"]["post"]["requestBody"]
    assert body["content"]["text/plain"]["schema"] == {"type": "string", "format": "binary"}
    alert = body["content"]["application/json"]["schema"]
    assert alert["additionalProperties"] is True
    assert {"ticker", "price", "indicator", "signal", "interval", "time"} <= set(alert["properties"])


def test_media_is_declared_as_the_png_it_serves(document: dict[str, Any]) -> None:
    ok = document["paths"]["/media/{key}"]["get"]["responses"]["200"]
    assert ok["content"] == {"image/png": {"schema": {"type": "string", "format": "binary"}}}


def test_the_event_stream_describes_its_messages(document: dict[str, Any]) -> None:
    ok = document["paths"]["/api/users/{user_id}/events"]["get"]["responses"]["200"]
    assert ok["content"]["text/event-stream"]["schema"] == {
        "type": "array",
        "items": {
            "oneOf": [
                {"$ref": "#/components/schemas/EventMessage"},
                {"$ref": "#/components/schemas/StreamErrorMessage"},
            ]
        },
    }
    schemas = document["components"]["schemas"]
    assert schemas["EventMessage"]["properties"]["data"] == {"$ref": "#/components/schemas/EventOut"}
    assert schemas["StreamErrorMessage"]["properties"]["event"] == {"type": "string", "const": "stream-error"}
    event_types = schemas["EventOut"]["properties"]["type"]["enum"]
    assert {"created", "screenshot_updated", "outcome_updated", "tradingview_session_updated"} <= set(
        event_types
    )
