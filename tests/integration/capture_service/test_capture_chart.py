"""Captures of the chart stub with real Chromium: readiness, sessions, failures and recovery."""

from __future__ import annotations

import asyncio
import signal

import httpx
import psutil
import pytest
from PIL import Image
from playwright.async_api import Browser, async_playwright

from capture_service.browser import UNNEEDED_FEATURES, BrowserPool, find_chromium
from capture_service.capture import Screenshot, TradingViewSession, capture_chart, chart_url
from capture_service.chart_stub import LEFT_TOOLBAR_PX, OVERLAY_RGB, TOP_TOOLBAR_PX
from capture_service.errors import (
    BrowserUnavailableError,
    ChartPageError,
    ChartTimeoutError,
    LayoutUnavailableError,
    SessionInvalidError,
)
from tests.integration.capture_service.conftest import (
    CANDLE_DOWN,
    CANDLE_UP,
    LEGEND_BOX,
    LEGEND_TEXT,
    VIEWPORT,
    ChartStub,
    count,
    picture,
)

GOOD = TradingViewSession(sessionid="user-a-session", sessionid_sign="user-a-sign")


def pixels(shot: Screenshot) -> Image.Image:
    return picture(shot.png)


def newest_chromium() -> psutil.Process:
    """The Chromium that started last: the function-scoped pool's, other pools having started earlier."""
    return max(chromium_browser_processes(), key=lambda process: process.create_time())


def chromium_browser_processes() -> list[psutil.Process]:
    """Chromium main processes started by this test process (renderers and helpers carry --type=)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "chrom" in child.name() and not any(arg.startswith("--type=") for arg in child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


async def renderer_command_lines(browser: Browser) -> list[list[str]]:
    """The command line of each renderer process of `browser`, which lists the features it runs with."""
    session = await browser.new_browser_cdp_session()
    info = await session.send("SystemInfo.getProcessInfo")
    await session.detach()
    return [
        psutil.Process(process["id"]).cmdline()
        for process in info["processInfo"]
        if process["type"] == "renderer"
    ]


def disabled_features(command_line: list[str]) -> set[str]:
    """The features Chromium runs with disabled: it keeps only the last --disable-features."""
    values = [arg.split("=", 1)[1] for arg in command_line if arg.startswith("--disable-features=")]
    return set(values[-1].split(",")) if values else set()


async def browser_command_line(browser: Browser) -> list[str]:
    """The browser process's arguments. Renderers' are not read: Chromium rewrites their titles in the
    space of their argv and environment, so with the pool's small environment a renderer's
    /proc/<pid>/cmdline is cut short."""
    session = await browser.new_browser_cdp_session()
    info = await session.send("SystemInfo.getProcessInfo")
    await session.detach()
    [pid] = [process["id"] for process in info["processInfo"] if process["type"] == "browser"]
    return psutil.Process(pid).cmdline()


async def wait_for_request(stub: ChartStub) -> None:
    """Until the stub has received a request; polls because the stub is another server."""
    async with asyncio.timeout(20):
        while not await stub.requests():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_capture_with_a_valid_session_is_the_chart_without_overlays(
    chart_stub: ChartStub, shared_pool: BrowserPool
) -> None:
    url = chart_url(chart_stub.base_url, "layoutA", "BINANCE:BTCUSDT", "15")

    shot = await capture_chart(shared_pool, url, GOOD, timeout_seconds=15)

    assert (shot.width, shot.height) == (VIEWPORT[0] - LEFT_TOOLBAR_PX, VIEWPORT[1] - TOP_TOOLBAR_PX)
    image = pixels(shot)
    assert image.size == (shot.width, shot.height)
    assert len(set(image.get_flattened_data())) > 50, "the screenshot is nearly blank"
    assert count(image, CANDLE_UP) > 1000
    assert count(image, CANDLE_DOWN) > 1000
    assert count(image.crop(LEGEND_BOX), LEGEND_TEXT) > 50, "no legend with the ticker"
    # The stub's cookie banner and promo dialog are this colour; hidden, none of it may show.
    assert count(image, OVERLAY_RGB) == 0
    (received,) = await chart_stub.requests()
    assert received["path"] == "/chart/layoutA/"
    assert received["query"] == {"symbol": "BINANCE:BTCUSDT", "interval": "15"}
    assert received["logged_in"] is True


async def test_the_picture_depends_on_the_ticker_and_nothing_else(
    chart_stub: ChartStub, shared_pool: BrowserPool
) -> None:
    bitcoin = chart_url(chart_stub.base_url, "layoutA", "BINANCE:BTCUSDT", "15")
    apple = chart_url(chart_stub.base_url, "layoutA", "NASDAQ:AAPL", "15")

    first, again, other = [
        pixels(await capture_chart(shared_pool, url, GOOD, timeout_seconds=15))
        for url in (bitcoin, bitcoin, apple)
    ]

    assert first.tobytes() == again.tobytes()
    assert first.crop(LEGEND_BOX).tobytes() != other.crop(LEGEND_BOX).tobytes()
    assert first.tobytes() != other.tobytes()


@pytest.mark.parametrize(
    "session",
    [
        TradingViewSession(sessionid="expired-2024", sessionid_sign="user-a-sign"),
        TradingViewSession(sessionid="user-a-session", sessionid_sign=""),
    ],
    ids=["expired", "sign-missing"],
)
async def test_a_logged_out_page_is_a_session_error_not_a_screenshot(
    chart_stub: ChartStub, shared_pool: BrowserPool, session: TradingViewSession
) -> None:
    url = chart_url(chart_stub.base_url, "layoutA", "BINANCE:BTCUSDT")

    with pytest.raises(SessionInvalidError) as raised:
        await capture_chart(shared_pool, url, session, timeout_seconds=15)

    assert raised.value.reason == "tradingview_session_invalid"
    assert not raised.value.retryable
    (received,) = await chart_stub.requests()
    assert received["logged_in"] is False


async def test_a_chart_that_never_finishes_loading_times_out(
    chart_stub: ChartStub, shared_pool: BrowserPool
) -> None:
    url = chart_url(chart_stub.base_url, "layoutA", "BINANCE:BTCUSDT") + "&stub_mode=hang"

    with pytest.raises(ChartTimeoutError) as raised:
        await capture_chart(shared_pool, url, GOOD, timeout_seconds=3)

    assert raised.value.reason == "timeout"
    assert raised.value.retryable


async def test_an_http_error_page_is_a_chart_error(chart_stub: ChartStub, shared_pool: BrowserPool) -> None:
    await chart_stub.configure(mode="500")
    url = chart_url(chart_stub.base_url, "layoutA", "BINANCE:BTCUSDT")

    with pytest.raises(ChartPageError, match="HTTP 500"):
        await capture_chart(shared_pool, url, GOOD, timeout_seconds=10)


async def test_a_crashed_tab_fails_its_capture_and_the_next_capture_works(
    chart_stub: ChartStub, own_pool: BrowserPool
) -> None:
    crashing = chart_url(chart_stub.base_url, "layoutA", "BINANCE:BTCUSDT") + "&stub_mode=crash"
    healthy = chart_url(chart_stub.base_url, "layoutA", "BINANCE:BTCUSDT")

    with pytest.raises(ChartPageError, match="crash"):
        await capture_chart(own_pool, crashing, GOOD, timeout_seconds=60)
    shot = await capture_chart(own_pool, healthy, GOOD, timeout_seconds=15)

    assert shot.width > 0
    assert own_pool.launches == 1, "a tab crash must not cost the browser"


async def test_concurrent_captures_each_carry_only_their_own_users_cookies(
    chart_stub: ChartStub, shared_pool: BrowserPool
) -> None:
    sessions = {
        f"USER{n}:TICKER": TradingViewSession(sessionid=f"session-{n}", sessionid_sign=f"sign-{n}")
        for n in range(3)
    }
    urls = {ticker: chart_url(chart_stub.base_url, "shared", ticker) for ticker in sessions}

    shots = await asyncio.gather(
        *(
            capture_chart(shared_pool, urls[ticker], session, timeout_seconds=20)
            for ticker, session in sessions.items()
        )
    )

    assert len(shots) == 3
    received = await chart_stub.requests()
    assert sorted(entry["query"]["symbol"] for entry in received) == sorted(sessions)
    for entry in received:
        session = sessions[entry["query"]["symbol"]]
        assert entry["cookies"] == {"sessionid": session.sessionid, "sessionid_sign": session.sessionid_sign}


async def test_the_pool_relaunches_chromium_after_it_was_killed(
    chart_stub: ChartStub, own_pool: BrowserPool
) -> None:
    url = chart_url(chart_stub.base_url, "layoutA", "BINANCE:BTCUSDT")
    browser_process = newest_chromium()

    browser_process.send_signal(signal.SIGKILL)
    await asyncio.to_thread(browser_process.wait, 10)
    shot = await capture_chart(own_pool, url, GOOD, timeout_seconds=20)

    assert shot.width > 0
    assert own_pool.launches == 2
    assert browser_process.pid not in {process.pid for process in chromium_browser_processes()}


async def test_a_capture_in_flight_when_chromium_dies_fails_as_a_browser_error(
    chart_stub: ChartStub, own_pool: BrowserPool
) -> None:
    url = chart_url(chart_stub.base_url, "layoutA", "BINANCE:BTCUSDT") + "&stub_mode=hang"
    capture = asyncio.create_task(capture_chart(own_pool, url, GOOD, timeout_seconds=30))
    await wait_for_request(chart_stub)
    browser_process = newest_chromium()

    browser_process.send_signal(signal.SIGKILL)

    with pytest.raises(BrowserUnavailableError):
        await capture


async def test_the_pool_keeps_playwrights_disabled_features_and_runs_no_browser_ui_renderers(
    chart_stub: ChartStub, shared_pool: BrowserPool
) -> None:
    url = chart_url(chart_stub.base_url, "layout", "NASDAQ:AAPL", "60")
    async with async_playwright() as playwright:
        executable = find_chromium(None, playwright.chromium.executable_path)
        plain = await playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            await (await plain.new_page()).goto(url)
            playwright_default = disabled_features(await browser_command_line(plain))
        finally:
            await plain.close()
    async with shared_pool.context([]) as context:
        await (await context.new_page()).goto(url)
        assert context.browser is not None
        ours = disabled_features(await browser_command_line(context.browser))
        renderers = await renderer_command_lines(context.browser)

    assert playwright_default
    assert playwright_default <= ours
    assert set(UNNEEDED_FEATURES) <= ours
    assert renderers
    for command_line in renderers:
        assert "--top-chrome-webui" not in command_line


# What the capture decided before it asked for positive proof: logged out only when sign-in UI showed.
_SIGN_IN_UI_ONLY = """
() => document.querySelector('[data-dialog-name="sign-in"], [data-name="header-user-menu-sign-in"]')
  ? "signed_out" : "ready"
"""


async def test_a_logged_out_chart_without_sign_in_ui_fails_on_positive_proof(
    chart_stub: ChartStub, shared_pool: BrowserPool
) -> None:
    """TradingView draws the chart for anonymous visitors and hides "Sign in" in the user menu: looking for
    sign-in UI calls that page signed in; asking the page for its user does not."""
    expired = TradingViewSession(sessionid="expired-2025", sessionid_sign="user-a-sign")
    url = chart_url(chart_stub.base_url, "", "BINANCE:BTCUSDT")
    async with shared_pool.context(expired.cookies(url)) as context:
        page = await context.new_page()
        await page.goto(url)
        await page.wait_for_selector(".chart-gui-wrapper canvas", state="attached")
        assert await page.evaluate(_SIGN_IN_UI_ONLY) == "ready"
        await page.click('[data-name="header-user-menu-button"]')
        assert await page.evaluate(_SIGN_IN_UI_ONLY) == "signed_out"

    with pytest.raises(SessionInvalidError) as raised:
        await capture_chart(shared_pool, url, expired, timeout_seconds=15)

    assert raised.value.reason == "tradingview_session_invalid"


async def test_a_private_layout_is_captured_for_its_owner_only(
    chart_stub: ChartStub, shared_pool: BrowserPool
) -> None:
    async with httpx.AsyncClient(base_url=chart_stub.base_url) as client:
        answer = await client.post(
            "/_stub/private_layouts", json={"layout": "privLayout1", "owner_sessionid": GOOD.sessionid}
        )
        answer.raise_for_status()
    url = chart_url(chart_stub.base_url, "privLayout1", "BINANCE:BTCUSDT", "15")
    other = TradingViewSession(sessionid="user-b-session", sessionid_sign="user-b-sign")

    shot = await capture_chart(shared_pool, url, GOOD, timeout_seconds=15)
    with pytest.raises(LayoutUnavailableError) as raised:
        await capture_chart(shared_pool, url, other, timeout_seconds=15)

    assert shot.width > 0
    assert raised.value.reason == "layout_unavailable"
    assert not raised.value.retryable
    paths = [entry["path"] for entry in await chart_stub.requests()]
    # The other user's visit fell back to the default chart, signed in: the old check would have kept it.
    assert paths == ["/chart/privLayout1/", "/chart/privLayout1/", "/chart/"]


INDICATOR_LINE = (0x7E, 0x57, 0xC2)


async def test_the_heavy_page_is_captured_only_once_its_feed_and_late_pane_have_drawn(
    chart_stub: ChartStub, shared_pool: BrowserPool
) -> None:
    await chart_stub.configure(page="heavy")
    url = chart_url(chart_stub.base_url, "layoutH", "BINANCE:BTCUSDT", "15")

    shot = await capture_chart(shared_pool, url, GOOD, timeout_seconds=25)

    image = pixels(shot)
    # The indicator pane loads after the bars: its line in the picture proves the capture waited for it.
    assert count(image, INDICATOR_LINE) > 300
    # Thousands of sub-pixel bars blend their colours; the wicks keep theirs.
    assert count(image, CANDLE_UP) + count(image, CANDLE_DOWN) > 300
