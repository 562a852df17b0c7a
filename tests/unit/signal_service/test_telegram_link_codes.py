"""Telegram link codes before any database work: what is refused, and how a code is stored."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from mesh.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from signal_service.settings import SignalSettings
from signal_service.telegram_links.service import TelegramLinks, hash_code


class NoDatabase:
    """Any use is a test failure: these refusals must come before the database."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the database was used ({name})")


def links(**settings: Any) -> TelegramLinks:
    return TelegramLinks(database=NoDatabase(), settings=SignalSettings(**settings))  # type: ignore[arg-type]


def test_only_the_codes_hash_is_kept() -> None:
    assert hash_code("abc") == hashlib.sha256(b"abc").hexdigest()


@pytest.mark.parametrize("code", ["", "short", "A" * 31, "A" * 33, "A" * 31 + "!", "A" * 31 + " "])
async def test_a_code_that_was_never_issued_is_not_found_without_a_query(code: str) -> None:
    with pytest.raises(NotFoundError) as refused:
        await links().bind(code, "4242")
    assert refused.value.reason == "TELEGRAM_LINK_NOT_FOUND"


@pytest.mark.parametrize("chat_id", ["", "chat", "12 34", "1.5", "@x"])
async def test_a_chat_id_telegram_never_sends_is_invalid(chat_id: str) -> None:
    with pytest.raises(InvalidArgumentError) as refused:
        await links().bind("A" * 32, chat_id)
    assert refused.value.reason == "INVALID_CHAT_ID"


async def test_links_need_the_bots_username() -> None:
    with pytest.raises(FailedPreconditionError) as refused:
        await links(telegram_bot_username=None).create("5d3b1f6e-8f2a-4c3e-9d7b-2a1e0c4b6f80")
    assert refused.value.reason == "TELEGRAM_NOT_CONFIGURED"


def test_the_bots_username_is_checked() -> None:
    with pytest.raises(ValueError, match="telegram_bot_username"):
        SignalSettings(telegram_bot_username="not a bot")
