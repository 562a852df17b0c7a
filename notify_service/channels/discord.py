"""A trader's Discord webhook: an embed with the chart attached, edited when the outcome is marked.

The stored URL names the webhook (its id and token); the call goes to the configured API origin
(ALERTS_DISCORD_API_URL: Discord's own in production, the Discord stub under `alerts dev`/`demo`), so
every accepted form (discordapp.com, canary, an API version) reaches the same API.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

from notify_service.channels.errors import DeliveryError, status_failure, transport_failure

_WEBHOOK_URL = re.compile(
    r"^https://(?:(?:canary|ptb)\.)?discord(?:app)?\.com/api(?:/v\d+)?/webhooks/(\d{15,25})/([A-Za-z0-9_-]{20,100})$"
)
DISCORD_API_URL = "https://discord.com/api"


def valid_webhook_url(url: str) -> bool:
    return bool(_WEBHOOK_URL.match(url))


class DiscordWebhook:
    """Sends through a guarded client (notify_service.outbound): the URL is the trader's."""

    def __init__(self, client: httpx.AsyncClient, api_url: str = DISCORD_API_URL) -> None:
        self._client = client
        self._api_url = api_url.rstrip("/")

    def _webhook(self, webhook_url: str) -> str:
        match = _WEBHOOK_URL.match(webhook_url)
        if match is None:
            raise DeliveryError("the stored Discord webhook URL is not a Discord webhook", permanent=True)
        return f"{self._api_url}/webhooks/{match[1]}/{match[2]}"

    async def send(self, webhook_url: str, embed: dict[str, Any], photo: bytes | None) -> str:
        payload: dict[str, Any] = {"embeds": [embed], "allowed_mentions": {"parse": []}}
        if photo is not None:
            payload["embeds"][0] = {**embed, "image": {"url": "attachment://chart.png"}}
            payload["attachments"] = [{"id": 0, "filename": "chart.png"}]
            files = {"files[0]": ("chart.png", photo, "image/png")}
            request: dict[str, Any] = {"data": {"payload_json": json.dumps(payload)}, "files": files}
        else:
            request = {"json": payload}
        body = await self._call("POST", f"{self._webhook(webhook_url)}?wait=true", request)
        message_id = body.get("id")
        if not isinstance(message_id, str) or not message_id:
            raise DeliveryError("Discord answered without a message id", permanent=False)
        return message_id

    async def edit(self, webhook_url: str, message_id: str, embed: dict[str, Any]) -> None:
        url = f"{self._webhook(webhook_url)}/messages/{message_id}"
        await self._call("PATCH", url, {"json": {"embeds": [embed]}})

    async def _call(self, method: str, url: str, request: dict[str, Any]) -> dict[str, Any]:
        try:
            answer = await self._client.request(method, url, **request)
        except httpx.HTTPError as exc:
            raise transport_failure(exc) from None
        try:
            body = answer.json()
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        if 200 <= answer.status_code < 300:
            return body
        retry_after = body.get("retry_after") or answer.headers.get("retry-after")
        raise status_failure(
            answer.status_code, str(body.get("message") or ""), float(retry_after) if retry_after else None
        )
