"""The Telegram Bot API stub in process: methods, limits, injected failures, updates, the request log."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from litestar.testing import TestClient

from notify_service.telegram_stub import create_telegram_stub_app

BOT = "/bot123:secret-token"


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_telegram_stub_app()) as test_client:
        yield test_client


def test_send_photo_then_edit_its_caption(client: TestClient) -> None:
    sent = client.post(
        f"{BOT}/sendPhoto",
        data={"chat_id": "42", "caption": "BTC long"},
        files={"photo": ("chart.png", b"\x89PNG-bytes", "image/png")},
    ).json()["result"]
    edited = client.post(
        f"{BOT}/editMessageCaption",
        json={"chat_id": "42", "message_id": sent["message_id"], "caption": "BTC long: WIN +3.2%"},
    ).json()

    assert sent["caption"] == "BTC long"
    assert sent["photo"][0]["file_size"] == len(b"\x89PNG-bytes")
    assert edited == {"ok": True, "result": {**sent, "caption": "BTC long: WIN +3.2%"}}
    recorded = client.get("/_stub/requests").json()
    assert [entry["method"] for entry in recorded] == ["sendPhoto", "editMessageCaption"]
    assert "secret-token" not in str(recorded)
    assert recorded[0]["photo_bytes"] == len(b"\x89PNG-bytes")


def test_a_second_message_to_a_chat_within_a_second_is_told_to_wait(client: TestClient) -> None:
    first = client.post(f"{BOT}/sendMessage", json={"chat_id": "7", "text": "one"})
    second = client.post(f"{BOT}/sendMessage", json={"chat_id": "7", "text": "two"})
    other_chat = client.post(f"{BOT}/sendMessage", json={"chat_id": "8", "text": "three"})

    assert first.status_code == other_chat.status_code == 200
    assert second.status_code == 429
    assert second.json()["parameters"] == {"retry_after": 1}


def test_clearing_the_request_log_forgets_the_sends_counted_against_the_limits(client: TestClient) -> None:
    client.post(f"{BOT}/sendMessage", json={"chat_id": "7", "text": "one"})
    assert client.post(f"{BOT}/sendMessage", json={"chat_id": "7", "text": "two"}).status_code == 429

    assert client.delete("/_stub/requests").status_code == 204
    again = client.post(f"{BOT}/sendMessage", json={"chat_id": "7", "text": "three"})

    assert again.status_code == 200
    assert [entry["params"]["text"] for entry in client.get("/_stub/requests").json()] == ["three"]


def test_injected_429_for_the_next_calls_only(client: TestClient) -> None:
    client.post("/_stub/mode", json={"mode": "429", "retry_after": 3, "count": 1})

    refused = client.post(f"{BOT}/sendMessage", json={"chat_id": "1", "text": "x"})
    accepted = client.post(f"{BOT}/sendMessage", json={"chat_id": "1", "text": "x"})

    assert refused.status_code == 429
    assert refused.json()["parameters"]["retry_after"] == 3
    assert accepted.status_code == 200


def test_editing_an_unknown_message_is_a_400(client: TestClient) -> None:
    answer = client.post(f"{BOT}/editMessageText", json={"chat_id": "1", "message_id": 999, "text": "x"})

    assert answer.status_code == 400
    assert answer.json()["description"] == "Bad Request: message to edit not found"


def test_queued_updates_are_returned_by_get_updates(client: TestClient) -> None:
    client.post("/_stub/updates", json={"message": {"text": "/start abc", "chat": {"id": 5}}})

    updates = client.post(f"{BOT}/getUpdates", json={"offset": 0, "timeout": 0}).json()["result"]
    later = client.post(f"{BOT}/getUpdates", json={"offset": updates[0]["update_id"] + 1}).json()

    assert updates[0]["message"]["text"] == "/start abc"
    assert later["result"] == []
