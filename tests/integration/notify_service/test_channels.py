"""Each channel against a real HTTP server: the Telegram stub, a Discord-shaped receiver, a webhook
receiver that verifies signatures as the Standard Webhooks libraries do."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from litestar import Litestar, Request, patch, post
from litestar.datastructures import UploadFile
from litestar.params import FromPath
from pydantic import SecretStr

from notify_service.channels.discord import DiscordWebhook, valid_webhook_url
from notify_service.channels.errors import DeliveryError
from notify_service.channels.telegram import TelegramBot
from notify_service.channels.webhook import SignedWebhook
from notify_service.outbound import guarded_client
from notify_service.signing import verify
from notify_service.telegram_stub import create_telegram_stub_app
from tests.support import asgi_app_in_thread

TOKEN = SecretStr("123456:stub-bot-token")
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
received: list[dict[str, Any]] = []


@post("/api/webhooks/{hook_id:str}/{hook_token:str}", status_code=200)
async def discord_execute(request: Request[Any, Any, Any]) -> dict[str, Any]:
    form = await request.form()
    files = {name: await value.read() for name, value in form.multi_items() if isinstance(value, UploadFile)}
    payload = json.loads(form["payload_json"]) if "payload_json" in form else await request.json()
    received.append(
        {"kind": "discord", "query": dict(request.query_params), "payload": payload, "files": files}
    )
    return {"id": "998877665544332211"}


@patch("/api/webhooks/{hook_id:str}/{hook_token:str}/messages/{message_id:str}", status_code=200)
async def discord_edit(request: Request[Any, Any, Any], message_id: FromPath[str]) -> dict[str, Any]:
    received.append({"kind": "discord-edit", "message_id": message_id, "payload": await request.json()})
    return {"id": message_id}


@post("/hook", status_code=204)
async def webhook_receiver(request: Request[Any, Any, Any]) -> None:
    body = await request.body()
    headers = {
        name: request.headers[name] for name in ("webhook-id", "webhook-timestamp", "webhook-signature")
    }
    received.append(
        {"kind": "webhook", "valid": verify(SECRET, headers, body, now=int(time.time())), "body": body}
    )


@post("/hook-gone", status_code=410)
async def webhook_gone() -> None:
    return None


@pytest.fixture(scope="module")
def telegram_url() -> Iterator[str]:
    with asgi_app_in_thread(create_telegram_stub_app()) as url:
        yield url


@pytest.fixture(scope="module")
def receiver_url() -> Iterator[str]:
    app = Litestar([discord_execute, discord_edit, webhook_receiver, webhook_gone], openapi_config=None)
    with asgi_app_in_thread(app) as url:
        yield url


@pytest.fixture
async def bot(telegram_url: str) -> AsyncIterator[TelegramBot]:
    async with httpx.AsyncClient(base_url=telegram_url, timeout=5) as client:
        await client.delete("/_stub/requests")
        await client.post("/_stub/mode", json={"mode": "ok"})
        yield TelegramBot(client, telegram_url, TOKEN)


@pytest.fixture
async def guarded() -> AsyncIterator[httpx.AsyncClient]:
    received.clear()
    async with guarded_client(allow_loopback=True, timeout_seconds=5) as client:
        yield client


async def test_photo_then_caption_edit(bot: TelegramBot, telegram_url: str) -> None:
    message_id = await bot.send_photo("-100123", PNG, "<b>BTC</b>")
    await bot.edit("-100123", message_id, "<b>BTC</b>\n✅ WIN", is_caption=True)
    # Repeating an edit whose acknowledgement was lost is not an error.
    await bot.edit("-100123", message_id, "<b>BTC</b>\n✅ WIN", is_caption=True)

    async with httpx.AsyncClient(base_url=telegram_url) as client:
        calls = (await client.get("/_stub/requests")).json()
    assert [call["method"] for call in calls] == ["sendPhoto", "editMessageCaption", "editMessageCaption"]
    assert calls[0]["photo_bytes"] == len(PNG)
    assert calls[0]["params"]["parse_mode"] == "HTML"


async def test_text_then_photo_as_a_reply(bot: TelegramBot, telegram_url: str) -> None:
    text_id = await bot.send_message("42", "BTC long")
    photo_id = await bot.send_photo("43", PNG, "chart", reply_to=text_id)

    async with httpx.AsyncClient(base_url=telegram_url) as client:
        calls = (await client.get("/_stub/requests")).json()
    assert photo_id != text_id
    assert calls[1]["params"]["reply_to_message_id"] == str(text_id)


@pytest.mark.parametrize(
    ("mode", "permanent", "retry_after"),
    [({"mode": "429", "retry_after": 7}, False, 7.0), ({"mode": "500"}, False, None)],
)
async def test_provider_failures_say_whether_to_retry(
    bot: TelegramBot, telegram_url: str, mode: dict[str, Any], permanent: bool, retry_after: float | None
) -> None:
    async with httpx.AsyncClient(base_url=telegram_url) as client:
        await client.post("/_stub/mode", json={**mode, "count": 1})

    with pytest.raises(DeliveryError) as raised:
        await bot.send_message("77", "x")

    assert (raised.value.permanent, raised.value.retry_after) == (permanent, retry_after)
    assert TOKEN.get_secret_value() not in str(raised.value)


async def test_a_bad_request_is_permanent(bot: TelegramBot) -> None:
    with pytest.raises(DeliveryError) as raised:
        await bot.edit("5", 999_999, "x", is_caption=False)

    assert raised.value.permanent
    assert "message to edit not found" in raised.value.reason


async def test_an_unreachable_api_never_shows_the_token() -> None:
    async with httpx.AsyncClient(timeout=2) as client:
        bot = TelegramBot(client, "http://127.0.0.1:9", TOKEN)
        with pytest.raises(DeliveryError) as raised:
            await bot.send_message("1", "x")

    assert not raised.value.permanent
    assert TOKEN.get_secret_value() not in str(raised.value)


async def test_discord_gets_an_embed_with_the_chart_and_an_edit(
    guarded: httpx.AsyncClient, receiver_url: str
) -> None:
    hook = f"https://discord.com/api/webhooks/123456789012345678/{'t' * 68}"
    # The receiver plays Discord's API origin (ALERTS_DISCORD_API_URL).
    discord = DiscordWebhook(guarded, f"{receiver_url}/api")

    message_id = await discord.send(hook, {"title": "🚨 ADX"}, PNG)
    await discord.edit(hook, message_id, {"title": "🚨 ADX", "description": "✅ WIN"})

    sent, edited = received
    assert sent["query"] == {"wait": "true"}
    assert sent["payload"]["embeds"][0]["image"] == {"url": "attachment://chart.png"}
    assert sent["files"] == {"files[0]": PNG}
    assert sent["payload"]["allowed_mentions"] == {"parse": []}
    assert (edited["message_id"], edited["payload"]["embeds"][0]["description"]) == (message_id, "✅ WIN")


def test_only_discord_webhook_urls_are_discord_webhooks() -> None:
    token = "a" * 68
    assert valid_webhook_url(f"https://discord.com/api/webhooks/123456789012345678/{token}")
    assert valid_webhook_url(f"https://discordapp.com/api/v10/webhooks/123456789012345678/{token}")
    assert not valid_webhook_url(f"http://discord.com/api/webhooks/123456789012345678/{token}")
    assert not valid_webhook_url(f"https://discord.com.evil.example/api/webhooks/123456789012345678/{token}")
    assert not valid_webhook_url(f"https://discord.com/api/webhooks/123456789012345678/{token}?x=1")


async def test_signed_webhooks_verify_at_the_receiver(guarded: httpx.AsyncClient, receiver_url: str) -> None:
    await SignedWebhook(guarded).send(
        f"{receiver_url}/hook", SECRET, "sig-1.created", {"type": "signal.created"}
    )

    (delivery,) = received
    assert delivery["valid"]
    assert json.loads(delivery["body"]) == {"type": "signal.created"}


async def test_a_gone_webhook_fails_at_once(guarded: httpx.AsyncClient, receiver_url: str) -> None:
    with pytest.raises(DeliveryError) as raised:
        await SignedWebhook(guarded).send(f"{receiver_url}/hook-gone", SECRET, "sig-1.created", {})

    assert raised.value.permanent
    assert raised.value.reason == "HTTP 410"


async def test_a_stored_url_that_is_no_discord_webhook_is_never_called(guarded: httpx.AsyncClient) -> None:
    discord = DiscordWebhook(guarded, "http://127.0.0.1:9/api")

    with pytest.raises(DeliveryError) as raised:
        await discord.send("https://example.com/api/webhooks/123456789012345678/" + "t" * 68, {}, None)

    assert raised.value.permanent
    assert "not a Discord webhook" in raised.value.reason
