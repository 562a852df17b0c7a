"""Which Bot API updates carry a trader's `/start <code>`."""

from __future__ import annotations

from typing import Any

import pytest

from mesh.telegram_updates import StartCommand, start_command

CODE = "Abc_123-xyzABC_123-xyzABC_123-xy"


def update(text: Any, chat: Any = None) -> dict[str, Any]:
    return {"update_id": 7, "message": {"message_id": 1, "chat": chat or {"id": 4242}, "text": text}}


@pytest.mark.parametrize(
    ("text", "chat_id"),
    [
        (f"/start {CODE}", 4242),
        (f"  /start   {CODE} ", 4242),
        (f"/start@alerts_bot {CODE}", -1001234567890),
    ],
)
def test_start_with_a_code(text: str, chat_id: int) -> None:
    assert start_command(update(text, {"id": chat_id})) == StartCommand(chat_id=str(chat_id), code=CODE)


@pytest.mark.parametrize(
    "text",
    [
        "/start",
        "hello",
        f"/stop {CODE}",
        f"/start {CODE} extra",
        "/start " + "a" * 65,
        "/start c0de!",
        "/start код",
        None,
        42,
    ],
)
def test_anything_else_is_ignored(text: Any) -> None:
    assert start_command(update(text)) is None


@pytest.mark.parametrize(
    "shape",
    [
        None,
        [],
        {},
        {"edited_message": {"chat": {"id": 1}, "text": f"/start {CODE}"}},
        {"message": "text"},
        update(f"/start {CODE}", {"id": True}),
        update(f"/start {CODE}", {"id": 1.5}),
        {"message": {"text": f"/start {CODE}"}},
    ],
)
def test_malformed_updates_are_ignored(shape: Any) -> None:
    assert start_command(shape) is None
