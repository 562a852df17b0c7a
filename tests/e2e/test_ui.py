"""The signal viewer at /ui in real Chromium, against the whole system running as processes.

A signal posted to the webhook while the page is open must appear without a reload (over the SSE
stream), and its chart screenshot, captured by a real capture worker from the chart stub, must load.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from alerts.demo import DEMO_ALERTS
from alerts.dev import DevStack
from alerts.processes import free_port
from apidevs.alerts.v1 import resources_pb2, user_service_pb2, user_service_pb2_grpc
from capture_service.browser import find_chromium
from capture_service.settings import CaptureSettings
from mesh.auth import generate_key
from mesh.grpc import open_channel
from mesh.settings import CommonSettings
from tests.e2e.stacks import fresh_database

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
# Waits, not assertions on speed: a capture on a loaded CI machine may take a while.
SCREENSHOT_WAIT_MS = 90_000


@pytest.fixture(scope="module")
def stack(database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    # Its own database: the session's in-process signal server relays outbox rows of the database it
    # serves into another Redis namespace, where this stack's worker would never see them.
    with fresh_database(database_url) as own_database:
        yield from _started_stack(own_database, redis_url, tmp_path_factory)


def _started_stack(
    database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DevStack]:
    settings = CommonSettings(
        env="dev",
        database_url=database_url,
        redis_url=redis_url,
        data_dir=tmp_path_factory.mktemp("ui-stack"),
        edge_port=free_port(),
        signal_addr=f"127.0.0.1:{free_port()}",
        storage_addr=f"127.0.0.1:{free_port()}",
    )
    stack = DevStack(
        settings,
        extra_env={
            "ALERTS_REDIS_NAMESPACE": f"ui-{uuid.uuid4().hex[:10]}",
        },
    )
    stack.start()
    yield stack
    stack.stop()


@dataclass
class ViewerUser:
    user_id: str
    webhook_url: str
    token: str

    @property
    def link(self) -> str:
        return f"/ui#token={self.token}"


async def new_viewer_user(stack: DevStack) -> ViewerUser:
    """A premium user with a TradingView session and a viewer access token of theirs."""
    async with open_channel(stack.settings.signal_addr, stack.api_key) as channel:
        users = user_service_pb2_grpc.UserServiceStub(channel)
        created = await users.CreateUser(
            user_service_pb2.CreateUserRequest(plan=resources_pb2.PLAN_PREMIUM, default_chart_id="uiTest")
        )
        await users.SetTradingViewSession(
            user_service_pb2.SetTradingViewSessionRequest(
                user_id=created.user.user_id, sessionid="ui-session", sessionid_sign="v1:ui-sign"
            )
        )
        issued = await users.CreateAccessToken(
            user_service_pb2.CreateAccessTokenRequest(user_id=created.user.user_id, ttl_seconds=600)
        )
    return ViewerUser(created.user.user_id, created.webhook_url, issued.access_token)


async def revoke_tokens(stack: DevStack, user_id: str) -> None:
    async with open_channel(stack.settings.signal_addr, stack.api_key) as channel:
        await user_service_pb2_grpc.UserServiceStub(channel).RevokeAccessTokens(
            user_service_pb2.RevokeAccessTokensRequest(user_id=user_id)
        )


@pytest.fixture(scope="module")
async def viewer_user(stack: DevStack) -> ViewerUser:
    return await new_viewer_user(stack)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        executable = find_chromium(CaptureSettings().chromium_path, playwright.chromium.executable_path)
        launched = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
    opened = await context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    await context.close()
    assert errors == []


async def post_alert(client: httpx.AsyncClient, webhook_url: str, index: int) -> str:
    alert = DEMO_ALERTS[index]
    answer = await client.post(webhook_url, content=alert.body, headers={"content-type": alert.content_type})
    assert answer.status_code == 200, answer.text
    return answer.json()["signal_id"]


async def expect_screenshot_loaded(page: Page, card_selector: str) -> None:
    image = page.locator(f"{card_selector} .shot img")
    await expect(image).to_be_visible(timeout=SCREENSHOT_WAIT_MS)
    await page.wait_for_function(
        "selector => { const img = document.querySelector(selector);"
        " return img && img.complete && img.naturalWidth > 0; }",
        arg=f"{card_selector} .shot img",
        timeout=SCREENSHOT_WAIT_MS,
    )


async def test_a_new_signal_appears_live_and_its_screenshot_loads(
    stack: DevStack, viewer_user: ViewerUser, page: Page
) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        # BTCUSDT, AAPL, XAUUSD and the malformed one before the page opens; ETHUSDT (JSON) while it is open.
        listed = [await post_alert(client, viewer_user.webhook_url, index) for index in (0, 1, 3, 5)]

        await page.goto(stack.edge_url + viewer_user.link)
        await expect(page.locator("#live")).to_have_attribute("data-state", "live")
        for signal_id in listed:
            await expect(page.locator(f'li.signal[data-id="{signal_id}"]')).to_be_visible()
        assert viewer_user.token not in page.url  # taken out of the address bar at once

        live_id = await post_alert(client, viewer_user.webhook_url, 2)
        live_card = f'li.signal[data-id="{live_id}"]'
        await expect(page.locator(live_card)).to_be_visible()
        await expect(page.locator("li.signal").first).to_have_attribute("data-id", live_id)
        await expect(page.locator(f"{live_card} .ticker")).to_have_text("BINANCE:ETHUSDT")
        await expect(page.locator(f"{live_card} .indicator")).to_contain_text(
            "Squeeze Momentum DEF [APIDEVS]"
        )
        await expect(page.locator(f"{live_card} .price")).to_have_text("3456.78")
        await expect_screenshot_loaded(page, live_card)

        await page.locator(f"{live_card} .shot").click()
        lightbox = page.locator("#lightbox")
        await expect(lightbox).to_be_visible()
        await expect(lightbox.locator(".caption")).to_contain_text("BINANCE:ETHUSDT")
        await page.keyboard.press("Escape")
        await expect(lightbox).to_be_hidden()

        await page.locator("input[name=ticker]").fill("NASDAQ:AAPL")
        await expect(page.locator("li.signal")).to_have_count(1)
        await expect(page.locator("li.signal .ticker")).to_have_text("NASDAQ:AAPL")
        await page.locator("button[type=reset]").click()
        await expect(page.locator("li.signal")).to_have_count(5)
        malformed = f'li.signal[data-id="{listed[3]}"]'
        await expect(page.locator(f"{malformed} .shot-state")).to_contain_text("No chart")

        # The viewer's token reads only; outcomes the platform records arrive over the stream.
        refused = await client.patch(
            f"{stack.edge_url}/api/users/{viewer_user.user_id}/signals/{live_id}",
            json={"result": "win", "profit_loss": "1.00"},
            headers={"authorization": f"Bearer {viewer_user.token}"},
        )
        assert refused.status_code == 403, refused.text
        for signal_id, result in ((live_id, "win"), (listed[0], "loss")):
            answer = await client.patch(
                f"{stack.edge_url}/api/users/{viewer_user.user_id}/signals/{signal_id}",
                json={"result": result, "profit_loss": "120.50" if result == "win" else "-40.00"},
                headers={"authorization": f"Bearer {stack.api_key}"},
            )
            assert answer.status_code == 200, answer.text
            await expect(page.locator(f'li.signal[data-id="{signal_id}"] .result')).to_have_text(result)

        for signal_id in (live_id, *listed[:3]):
            await expect_screenshot_loaded(page, f'li.signal[data-id="{signal_id}"]')
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=ARTIFACTS / "ui.png", full_page=True)
        await page.set_viewport_size({"width": 390, "height": 844})
        await page.screenshot(path=ARTIFACTS / "ui-phone.png")
        # On a phone the cards stack in one column.
        boxes = [await card.bounding_box() for card in await page.locator("li.signal").all()]
        assert len({box["x"] for box in boxes if box}) == 1


async def test_a_card_says_when_the_price_came_from_a_delayed_feed(stack: DevStack, page: Page) -> None:
    trader = await new_viewer_user(stack)
    ids = {}
    async with httpx.AsyncClient(timeout=10) as client:
        for ticker in ("NASDAQ_DLY:AAPL", "NASDAQ:AAPL"):
            body = f"ADX DEF [APIDEVS]\nSeñal: Cruce Alcista\nTicker: {ticker}\nPrecio: 190.10"
            answer = await client.post(trader.webhook_url, content=body.encode())
            assert answer.status_code == 200, answer.text
            ids[ticker] = answer.json()["signal_id"]

    await page.goto(stack.edge_url + trader.link)
    delayed = page.locator(f'li.signal[data-id="{ids["NASDAQ_DLY:AAPL"]}"] .indicator')
    live = page.locator(f'li.signal[data-id="{ids["NASDAQ:AAPL"]}"] .indicator')
    await expect(delayed).to_have_text("ADX DEF [APIDEVS] · delayed feed")
    await expect(live).to_have_text("ADX DEF [APIDEVS]")


async def test_a_key_that_is_not_the_users_is_refused(
    stack: DevStack, viewer_user: ViewerUser, page: Page
) -> None:
    await page.goto(f"{stack.edge_url}/ui#user={viewer_user.user_id}&key={generate_key()}")
    await expect(page.locator("#sign-in-error")).to_contain_text("not accepted")
    await expect(page.locator("#sign-in")).to_be_visible()
    assert await page.evaluate("sessionStorage.length") == 0

    # A token whose signature does not hold is not accepted either.
    head, payload, signature = viewer_user.token.split(".")
    await page.goto(f"{stack.edge_url}/ui#token={head}.{payload}.{signature[::-1]}")
    await expect(page.locator("#sign-in-error")).to_contain_text("not accepted")

    # A real token of this user may not open another user's signals.
    await page.goto(f"{stack.edge_url}/ui#user={uuid.uuid4()}&key={viewer_user.token}")
    await expect(page.locator("#sign-in-error")).to_contain_text("may not read this user")


async def test_a_revoked_token_link_stops_working(stack: DevStack, page: Page) -> None:
    trader = await new_viewer_user(stack)
    await page.goto(stack.edge_url + trader.link)
    await expect(page.locator("#live")).to_have_attribute("data-state", "live")

    await revoke_tokens(stack, trader.user_id)
    await page.goto(stack.edge_url + trader.link)
    await expect(page.locator("#sign-in-error")).to_contain_text("not accepted")


async def test_stats_date_range_and_times_in_the_traders_zone(stack: DevStack, browser: Browser) -> None:
    trader = await new_viewer_user(stack)
    async with httpx.AsyncClient(timeout=10) as client:
        ids = [await post_alert(client, trader.webhook_url, index) for index in (0, 1, 3)]
        for signal_id, result in ((ids[0], "win"), (ids[1], "loss")):
            answer = await client.patch(
                f"{stack.edge_url}/api/users/{trader.user_id}/signals/{signal_id}",
                json={"result": result},
                headers={"authorization": f"Bearer {stack.api_key}"},
            )
            assert answer.status_code == 200, answer.text
    zone = "America/New_York"
    context = await browser.new_context(timezone_id=zone, viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    try:
        await page.goto(stack.edge_url + trader.link)
        await expect(page.locator("li.signal")).to_have_count(3)
        await expect(page.locator('[data-stat="total"]')).to_have_text("3")
        await expect(page.locator('[data-stat="month"]')).to_have_text("3")
        await expect(page.locator('[data-stat="winrate"]')).to_have_text("50.0 % of 2")
        await expect(page.locator("#zone")).to_have_text(f"Times in {zone}")
        shown = await page.locator("li.signal .when").first.text_content()
        assert shown is not None
        assert shown.endswith(("EST", "EDT", "GMT-5", "GMT-4")), shown

        today = datetime.now(ZoneInfo(zone)).date()
        await page.locator("input[name=from]").fill((today + timedelta(days=1)).isoformat())
        await expect(page.locator("li.signal")).to_have_count(0)
        await page.locator("input[name=from]").fill(today.isoformat())
        await page.locator("input[name=to]").fill(today.isoformat())
        await expect(page.locator("li.signal")).to_have_count(3)
        await page.locator("input[name=from]").fill("")
        await page.locator("input[name=to]").fill((today - timedelta(days=1)).isoformat())
        await expect(page.locator("li.signal")).to_have_count(0)
    finally:
        await context.close()
