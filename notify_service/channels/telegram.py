"""The platform's Telegram bot: the Bot API methods a notification needs.

The bot token sits in every request path, so no URL is ever logged or put into an error.
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import SecretStr

from notify_service.channels.errors import DeliveryError, status_failure, transport_failure

PARSE_MODE = "HTML"
# A long poll's answer comes after its timeout at the latest; this much more covers the network.
_POLL_SLACK_SECONDS = 10


class TelegramBot:
    def __init__(self, client: httpx.AsyncClient, api_url: str, token: SecretStr) -> None:
        self._client = client
        self._api_url = api_url.rstrip("/")
        self._token = token

    async def send_message(self, chat_id: str, text: str, *, reply_to: int | None = None) -> int:
        payload: dict[str, Any] = {"chat_id": chat_id, "text": text, "parse_mode": PARSE_MODE}
        if reply_to is not None:
            payload["reply_to_message_id"] = reply_to
            payload["allow_sending_without_reply"] = True
        return _message_id(await self._call("sendMessage", json=payload))

    async def send_photo(
        self, chat_id: str, photo: bytes, caption: str, *, reply_to: int | None = None
    ) -> int:
        data: dict[str, Any] = {"chat_id": chat_id, "caption": caption, "parse_mode": PARSE_MODE}
        if reply_to is not None:
            data["reply_to_message_id"] = str(reply_to)
            data["allow_sending_without_reply"] = "true"
        files = {"photo": ("chart.png", photo, "image/png")}
        return _message_id(await self._call("sendPhoto", data=data, files=files))

    async def edit(self, chat_id: str, message_id: int, text: str, *, is_caption: bool) -> None:
        method, field = ("editMessageCaption", "caption") if is_caption else ("editMessageText", "text")
        payload = {"chat_id": chat_id, "message_id": message_id, field: text, "parse_mode": PARSE_MODE}
        try:
            await self._call(method, json=payload)
        except DeliveryError as exc:
            # The message already says this: an edit repeated after a lost acknowledgement.
            if "message is not modified" not in exc.reason:
                raise

    async def get_updates(self, offset: int, timeout_seconds: int) -> list[dict[str, Any]]:
        """The bot's pending messages from `offset` on, waiting up to `timeout_seconds` for one (long
        polling); every update before `offset` is thereby confirmed to Telegram."""
        payload = {"offset": offset, "timeout": timeout_seconds, "allowed_updates": ["message"]}
        # The answer may take the whole long poll: the client's own timeout is shorter.
        result = await self._call("getUpdates", json=payload, timeout=timeout_seconds + _POLL_SLACK_SECONDS)
        updates = result if isinstance(result, list) else []
        return [update for update in updates if isinstance(update, dict)]

    async def _call(self, method: str, **request: Any) -> Any:
        url = f"{self._api_url}/bot{self._token.get_secret_value()}/{method}"
        try:
            answer = await self._client.post(url, **request)
        except httpx.HTTPError as exc:
            raise transport_failure(exc) from None
        try:
            body = answer.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        if answer.status_code == 200 and body.get("ok"):
            return body.get("result")
        parameters = body.get("parameters") or {}
        retry_after = parameters.get("retry_after") if isinstance(parameters, dict) else None
        description = str(body.get("description") or "")
        raise status_failure(answer.status_code, description, float(retry_after) if retry_after else None)


def _message_id(result: Any) -> int:
    message_id = result.get("message_id") if isinstance(result, dict) else None
    if not isinstance(message_id, int):
        raise DeliveryError("Telegram answered without a message id", permanent=False)
    return message_id
