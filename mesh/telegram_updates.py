"""The Telegram Bot API updates the platform's bot acts on: a trader's `/start <code>` from a t.me link.

Shared contract: the edge reads updates from Telegram's webhook (production), a notify worker from
getUpdates (dev); both hand the code and the chat to UserService.LinkTelegramChat and answer the chat
with one of the texts below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Telegram's deep-link parameter: at most 64 of A-Z, a-z, 0-9, _ and -.
_MAX_CODE_LENGTH = 64
_CODE_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")

LINKED_TEXT = "Connected: your alerts will arrive in this chat."
NOT_LINKED_TEXT = "This link is unknown, used or expired. Create a new one and open it again."
# The webhook secret Telegram sends back with every update (setWebhook's secret_token).
SECRET_TOKEN_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 - a header name, not a secret


@dataclass(frozen=True, slots=True)
class StartCommand:
    chat_id: str
    code: str


def start_command(update: Any) -> StartCommand | None:
    """The `/start <code>` in an update's message, or None for anything else (other messages, a bare
    /start, a code Telegram could not have sent)."""
    if not isinstance(update, dict):
        return None
    message = update.get("message")
    if not isinstance(message, dict):
        return None
    text, chat = message.get("text"), message.get("chat")
    if not isinstance(text, str) or not isinstance(chat, dict):
        return None
    chat_id = chat.get("id")
    if isinstance(chat_id, bool) or not isinstance(chat_id, int | str):
        return None
    parts = text.split()
    # "/start@bot_name" is how the command reads in a group chat.
    if len(parts) != 2 or parts[0].split("@", 1)[0] != "/start":
        return None
    code = parts[1]
    if len(code) > _MAX_CODE_LENGTH or not set(code) <= _CODE_CHARACTERS:
        return None
    return StartCommand(chat_id=str(chat_id), code=code)
