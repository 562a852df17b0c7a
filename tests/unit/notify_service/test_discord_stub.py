"""The Discord webhook stub in process: execute (JSON and multipart), edit, injected failures, the log."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from litestar.testing import TestClient

from notify_service.discord_stub import create_discord_stub_app

HOOK = "/api/webhooks/123456789012345678/secret-webhook-token"
PNG = b"\x89PNG-bytes"


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_discord_stub_app()) as test_client:
        yield test_client


def test_an_embed_with_an_attached_chart_then_an_edit(client: TestClient) -> None:
    payload = {"embeds": [{"title": "BTC", "image": {"url": "attachment://chart.png"}}]}
    sent = client.post(
        f"{HOOK}?wait=true",
        data={"payload_json": json.dumps(payload)},
        files={"files[0]": ("chart.png", PNG, "image/png")},
    )
    message = sent.json()
    edited = client.patch(f"{HOOK}/messages/{message['id']}", json={"embeds": [{"title": "BTC: WIN"}]})

    assert sent.status_code == 200
    assert message["embeds"] == payload["embeds"]
    assert message["attachments"] == [{"id": "0", "filename": "chart.png", "size": len(PNG)}]
    assert edited.status_code == 200
    assert edited.json()["embeds"] == [{"title": "BTC: WIN"}]
    recorded = client.get("/_stub/requests").json()
    assert [entry["method"] for entry in recorded] == ["execute", "edit"]
    assert recorded[0]["files"][0]["bytes"] == len(PNG)
    assert recorded[1]["message_id"] == message["id"]
    assert "secret-webhook-token" not in str(recorded)


def test_without_wait_discord_answers_204(client: TestClient) -> None:
    answer = client.post(HOOK, json={"content": "hello"})

    assert answer.status_code == 204


def test_empty_messages_and_unknown_edits_are_refused(client: TestClient) -> None:
    empty = client.post(f"{HOOK}?wait=true", json={})
    unknown = client.patch(f"{HOOK}/messages/42", json={"content": "x"})

    assert (empty.status_code, empty.json()["code"]) == (400, 50006)
    assert (unknown.status_code, unknown.json()["code"]) == (404, 10008)


def test_injected_429_carries_retry_after_for_the_next_calls_only(client: TestClient) -> None:
    client.post("/_stub/mode", json={"mode": "429", "retry_after": 3, "count": 1})

    refused = client.post(f"{HOOK}?wait=true", json={"content": "x"})
    accepted = client.post(f"{HOOK}?wait=true", json={"content": "x"})

    assert refused.status_code == 429
    assert refused.json()["retry_after"] == 3
    assert refused.headers["retry-after"] == "3"
    assert accepted.status_code == 200
    assert [entry["status"] for entry in client.get("/_stub/requests").json()] == [429, 200]


def test_injected_500_and_a_wrong_mode(client: TestClient) -> None:
    assert client.post("/_stub/mode", json={"mode": "teapot"}).status_code == 400
    client.post("/_stub/mode", json={"mode": "500"})

    assert client.post(f"{HOOK}?wait=true", json={"content": "x"}).status_code == 500
    client.delete("/_stub/requests")
    assert client.get("/_stub/requests").json() == []
