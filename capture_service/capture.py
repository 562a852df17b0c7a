"""One chart capture: open the user's layout with their session, wait until it has drawn, screenshot it.

Readiness is TradingView's own: the chart container with its canvases present and no loading spinner
showing. A chart draws for anonymous visitors too, and TradingView's "Sign in" entry hides in a menu, so
the absence of sign-in UI proves nothing: a capture is kept only on positive proof, the page's own user
data (``window.user`` with an id and a username), and, when a layout was asked for, only if that layout is
the one that opened (a private layout without access falls back to the default chart).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import struct
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlencode, urlsplit

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Page
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from capture_service.browser import BrowserPool, Cookie
from capture_service.errors import (
    BrowserUnavailableError,
    ChartPageError,
    ChartTimeoutError,
    LayoutUnavailableError,
    SessionInvalidError,
)

CHART_SELECTOR = ".chart-container"
SIGN_IN_SELECTORS = ('[data-dialog-name="sign-in"]', '[data-name="header-user-menu-sign-in"]')
# Cookie banners, toasts, promo and other dialogs float over the chart; none belongs in a screenshot.
OVERLAY_SELECTORS = (
    "#overlap-manager-root",
    '[data-role="toast-container"]',
    "[data-dialog-name]",
    '[role="dialog"]',
    '[class*="cookie" i]',
    '[class*="toast" i]',
)
_HIDE_OVERLAYS_CSS = ", ".join(OVERLAY_SELECTORS) + " { display: none !important; }"

# Polled in the page: "signed_out", "ready", or false while the chart is still loading.
_PAGE_STATE_SCRIPT = """
([signInSelector, chartSelector]) => {
  if (document.querySelector(signInSelector)) return "signed_out";
  const chart = document.querySelector(chartSelector);
  if (!chart || chart.clientWidth === 0 || chart.clientHeight === 0) return false;
  if (!chart.querySelector(".chart-gui-wrapper canvas")) return false;
  const spinners = document.querySelectorAll(".loading-indicator, .tv-spinner--shown");
  for (const spinner of spinners) {
    const shown = spinner.getClientRects().length > 0 && getComputedStyle(spinner).visibility !== "hidden";
    if (shown) return false;
  }
  return "ready";
}
"""
_STATE_POLL_MS = 100
# The signed-in user as the page itself knows it; null for an anonymous visitor.
_PAGE_USER_SCRIPT = """
() => {
  const user = window.user;
  if (!user || typeof user !== "object") return null;
  const id = user.id;
  const username = user.username;
  if ((typeof id !== "number" && typeof id !== "string") || !String(id)) return null;
  if (typeof username !== "string" || !username) return null;
  return { id: String(id), username: username };
}
"""


@dataclass(frozen=True)
class TradingViewSession:
    sessionid: str = field(repr=False)
    sessionid_sign: str = field(repr=False)

    @classmethod
    def from_json(cls, data: bytes) -> TradingViewSession:
        """Parses the decrypted ``{"sessionid": ..., "sessionid_sign": ...}`` document."""
        document = json.loads(data)
        if not isinstance(document, dict):
            raise ValueError("session document is not an object")
        sessionid, sessionid_sign = document.get("sessionid"), document.get("sessionid_sign")
        if not isinstance(sessionid, str) or not isinstance(sessionid_sign, str):
            raise ValueError("session document lacks sessionid or sessionid_sign")
        if not sessionid or not sessionid_sign:
            raise ValueError("session document has an empty sessionid or sessionid_sign")
        return cls(sessionid=sessionid, sessionid_sign=sessionid_sign)

    def cookies(self, chart_url: str) -> list[Cookie]:
        """The two session cookies, scoped to the chart origin's site.

        For www.tradingview.com that is ``.tradingview.com`` (as TradingView sets them); for an IP address
        or a single-label host such as the local chart stub it is the host itself.
        """
        parts = urlsplit(chart_url)
        host = parts.hostname or ""
        try:
            ipaddress.ip_address(host)
            domain = host
        except ValueError:
            labels = host.split(".")
            domain = "." + ".".join(labels[-2:]) if len(labels) >= 2 else host
        secure = parts.scheme == "https"
        return [
            Cookie(name="sessionid", value=self.sessionid, domain=domain, secure=secure),
            Cookie(name="sessionid_sign", value=self.sessionid_sign, domain=domain, secure=secure),
        ]


@dataclass(frozen=True)
class Screenshot:
    png: bytes = field(repr=False)
    width: int
    height: int


def chart_url(base_url: str, chart_id: str, ticker: str, interval: str = "") -> str:
    """``{base}/chart/{chart_id}/?symbol={ticker}[&interval=...]``; no chart_id opens the default layout."""
    query = {"symbol": ticker}
    if interval:
        query["interval"] = interval
    layout = f"{quote(chart_id, safe='')}/" if chart_id else ""
    return f"{base_url.rstrip('/')}/chart/{layout}?{urlencode(query)}"


def requested_layout(url: str) -> str:
    """The layout id in a chart URL (``/chart/{id}/``), or "" for the default chart."""
    segments = [segment for segment in urlsplit(url).path.split("/") if segment]
    return unquote(segments[1]) if len(segments) >= 2 and segments[0] == "chart" else ""


def png_dimensions(png: bytes) -> tuple[int, int]:
    if len(png) < 24 or png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError("not a PNG image")
    width, height = struct.unpack(">II", png[16:24])
    return width, height


async def capture_chart(
    pool: BrowserPool, url: str, session: TradingViewSession, *, timeout_seconds: float
) -> Screenshot:
    """Screenshots the chart at `url` in a fresh context holding only `session`'s cookies.

    Raises SessionInvalidError when the page does not show a signed-in user, LayoutUnavailableError when
    another layout than the requested one opened, ChartTimeoutError when the chart is not ready in time,
    ChartPageError for error pages and crashed tabs, BrowserUnavailableError when Chromium died.
    """
    try:
        async with asyncio.timeout(timeout_seconds):
            async with pool.context(session.cookies(url)) as context:
                page = await context.new_page()
                try:
                    return await _until_tab_crashes(page, _capture_page(page, url, timeout_seconds))
                except PlaywrightTimeoutError as exc:
                    raise ChartTimeoutError(f"chart not ready within {timeout_seconds:g} s") from exc
                except PlaywrightError as exc:
                    if not (context.browser and context.browser.is_connected()):
                        raise BrowserUnavailableError(f"Chromium went away mid-capture: {exc}") from exc
                    if "crash" in str(exc).lower():
                        raise ChartPageError(f"the chart tab crashed: {exc}") from exc
                    raise ChartPageError(f"chart page failed: {exc}") from exc
    except TimeoutError as exc:
        raise ChartTimeoutError(f"chart not ready within {timeout_seconds:g} s") from exc


async def _until_tab_crashes(page: Page, work: Coroutine[Any, Any, Screenshot]) -> Screenshot:
    """Runs `work`, abandoning it when the tab's renderer dies: pending page calls never settle then."""
    crashed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_crash(_page: Page) -> None:
        if not crashed.done():
            crashed.set_result(None)

    page.on("crash", on_crash)
    task = asyncio.ensure_future(work)
    either: set[asyncio.Future[Any]] = {task, crashed}
    try:
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.done() and not task.cancelled():
        return task.result()
    raise ChartPageError("the chart tab crashed")


async def _capture_page(page: Page, url: str, timeout_seconds: float) -> Screenshot:
    # asyncio.timeout around the whole capture is the real deadline; Playwright's own only backs it up.
    page.set_default_timeout(timeout_seconds * 1000)
    response = await page.goto(url, wait_until="domcontentloaded")
    if response is None:
        raise ChartPageError("chart page gave no response")
    if response.status >= 400:
        raise ChartPageError(f"chart page answered HTTP {response.status}")
    await page.add_style_tag(content=_HIDE_OVERLAYS_CSS)
    state = await page.wait_for_function(
        _PAGE_STATE_SCRIPT, arg=[", ".join(SIGN_IN_SELECTORS), CHART_SELECTOR], polling=_STATE_POLL_MS
    )
    if await state.json_value() == "signed_out":
        raise SessionInvalidError("TradingView shows its sign-in page: the session cookies are not valid")
    if await page.evaluate(_PAGE_USER_SCRIPT) is None:
        raise SessionInvalidError("the chart page shows no signed-in user: the session cookies are not valid")
    wanted = requested_layout(url)
    if wanted and requested_layout(page.url) != wanted:
        raise LayoutUnavailableError(f"layout {wanted!r} did not open: the session has no access to it")
    png = await page.locator(CHART_SELECTOR).first.screenshot(type="png", animations="disabled")
    width, height = png_dimensions(png)
    return Screenshot(png=png, width=width, height=height)
