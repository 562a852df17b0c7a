"""Connecting a trader's Telegram chat: a one-time code in a t.me deep link, bound by the bot's `/start`.

CreateTelegramLink issues `https://t.me/<bot>?start=<code>`; Telegram opens the bot and, when the trader
presses Start, sends it `/start <code>` from their chat. Whoever receives the bot's updates (the edge's
webhook, or a notify worker polling in dev) calls LinkTelegramChat with the code and that chat, and the
chat becomes the user's notification_preferences.telegram.chat_id (enabled; with_screenshot kept).

A code is 192 random bits, stored only as its SHA-256, usable once, until it expires
(`telegram_link_ttl_seconds`). Unknown, used and expired codes answer alike (NOT_FOUND).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from mesh.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from mesh.notification_preferences import TelegramPreferences
from signal_service.clock import utcnow
from signal_service.database import Database
from signal_service.ids import require_uuid
from signal_service.settings import SignalSettings
from signal_service.telegram_links.repository import TelegramLinkRepository
from signal_service.users.repository import UserRepository
from signal_service.visibility import no_such_user

# Telegram's start parameter allows up to 64 of these characters; token_urlsafe(24) makes 32.
_CODE = re.compile(r"[A-Za-z0-9_-]{32}")
_CODE_BYTES = 24


@dataclass(frozen=True, slots=True)
class IssuedLink:
    link: str
    code: str
    expires_at: datetime


def hash_code(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def no_such_link() -> NotFoundError:
    return NotFoundError("unknown, used or expired Telegram link", reason="TELEGRAM_LINK_NOT_FOUND")


class TelegramLinks:
    def __init__(self, *, database: Database, settings: SignalSettings) -> None:
        self._database = database
        self._settings = settings

    async def create(self, user_id: str) -> IssuedLink:
        bot = self._settings.telegram_bot_username
        if not bot:
            raise FailedPreconditionError(
                "ALERTS_TELEGRAM_BOT_USERNAME is not configured", reason="TELEGRAM_NOT_CONFIGURED"
            )
        parsed_id = require_uuid(user_id, "user_id")
        code = secrets.token_urlsafe(_CODE_BYTES)
        now = utcnow()
        expires_at = now + timedelta(seconds=self._settings.telegram_link_ttl_seconds)
        async with self._database.transaction() as session:
            if await UserRepository(session).lock(parsed_id) is None:
                raise no_such_user()
            links = TelegramLinkRepository(session)
            await links.delete_spent(parsed_id, now)
            await links.add(parsed_id, hash_code(code), expires_at)
        return IssuedLink(link=f"https://t.me/{bot}?start={code}", code=code, expires_at=expires_at)

    async def bind(self, code: str, chat_id: str) -> uuid.UUID:
        """Uses `code` for `chat_id`: that chat receives the code's user's Telegram notifications."""
        try:
            chat = TelegramPreferences(chat_id=chat_id).chat_id
        except ValueError:
            raise InvalidArgumentError(
                "chat_id must be a numeric Telegram chat id", reason="INVALID_CHAT_ID"
            ) from None
        if _CODE.fullmatch(code) is None:
            # Exactly the answer for a code that never existed.
            raise no_such_link()
        async with self._database.transaction() as session:
            user_id = await TelegramLinkRepository(session).use(hash_code(code), chat, utcnow())
            if user_id is None:
                raise no_such_link()
            users = UserRepository(session)
            found = await users.get(user_id, for_update=True)
            if found is None:
                raise no_such_link()
            preferences = dict(found[1].notification_preferences or {})
            current = preferences.get("telegram") or {}
            preferences["telegram"] = TelegramPreferences(
                chat_id=chat, enabled=True, with_screenshot=current.get("with_screenshot", True)
            ).model_dump()
            await users.update_config(user_id, notification_preferences=preferences)
        return user_id
