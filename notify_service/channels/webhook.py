"""Signed webhooks to a URL the trader (or their platform) chose, per the Standard Webhooks spec.

The ``webhook-id`` is the same for every attempt of one (signal, kind), so a receiver that saw a delivery
whose acknowledgement was lost recognises the retry.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from notify_service.channels.errors import status_failure, transport_failure
from notify_service.signing import signed_headers


class SignedWebhook:
    """Sends through a guarded client (notify_service.outbound): the URL is the trader's."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def send(self, url: str, secret: str, message_id: str, event: dict[str, Any]) -> None:
        body = json.dumps(event, separators=(",", ":"), sort_keys=True).encode()
        headers = signed_headers(secret, message_id, int(time.time()), body)
        try:
            answer = await self._client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise transport_failure(exc) from None
        if 200 <= answer.status_code < 300:
            return
        retry_after = answer.headers.get("retry-after", "")
        raise status_failure(
            answer.status_code, "", float(retry_after) if retry_after.replace(".", "", 1).isdigit() else None
        )
