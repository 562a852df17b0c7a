"""A local stand-in for TradingView's chart page, for tests and the offline demo.

It behaves as TradingView does where the capture and the session check can be fooled: the chart lives in
``div.chart-container`` with its canvases inside ``div.chart-gui-wrapper``, a loading spinner is shown
until the chart has drawn, cookie banners and promo dialogs float over the chart. A valid session is
``sessionid`` and ``sessionid_sign`` where the ``sessionid`` does not start with ``expired``. Only then does
a page carry the user's data (``window.user`` with id and username; the home page ``/`` embeds
``"auth_token"``, ``"id"`` and ``"username"``). A visitor without one still gets a fully drawn chart: the
header shows the same user-menu button, and the "Sign in" entry exists only once that menu is opened.
Private layouts (``POST /_stub/private_layouts``) fall back to the default chart for anyone but their owner.

Candles are derived from the symbol and interval, so the same URL always draws the same picture.
Failure modes, per request with ``?stub_mode=`` or for every request with ``POST /_stub/mode``:
``hang`` (the spinner never goes away), ``500`` (HTTP 500), ``crash`` (the page allocates until the
renderer process dies) and ``captcha`` (every page is a bot challenge, HTTP 403, as a WAF answers).
``GET /_stub/requests`` lists every request received with its cookies, so tests can prove which session
reached which capture; ``DELETE /_stub/requests`` clears the list.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import json
import random
import time
from collections import deque
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Literal
from urllib.parse import urlencode

import uvicorn
from litestar import Litestar, MediaType, Request, Response, WebSocket, delete, get, post, websocket
from litestar.datastructures import State
from litestar.exceptions import ValidationException
from litestar.params import FromPath, JSONBody
from litestar.response import Redirect

StubMode = Literal["ok", "hang", "500", "crash", "captcha"]
StubPage = Literal["light", "heavy"]
STUB_PAGES: tuple[StubPage, ...] = ("light", "heavy")
# The heavy page: script to parse and run, bars streamed over a WebSocket, then an indicator pane.
HEAVY_SCRIPT_BYTES = 4 * 1024 * 1024
HEAVY_BARS = 5000
HEAVY_FEED_SECONDS = 1.5
HEAVY_FEED_CHUNKS = 30
HEAVY_LATE_PANE_MS = 600
STUB_MODES: tuple[StubMode, ...] = ("ok", "hang", "500", "crash", "captcha")

# The chart container fills the viewport except TradingView's top and left toolbars, so a capture of it
# measures (viewport width - LEFT_TOOLBAR_PX) x (viewport height - TOP_TOOLBAR_PX).
TOP_TOOLBAR_PX = 38
LEFT_TOOLBAR_PX = 52
# Deliberately garish so tests can tell whether an overlay leaked into a screenshot.
OVERLAY_RGB = (255, 0, 255)

_MAX_RECORDED_REQUESTS = 10_000


@dataclass
class StubState:
    mode: StubMode = "ok"
    page: StubPage = "light"
    render_delay_ms: int = 300
    requests: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=_MAX_RECORDED_REQUESTS))
    # layout id -> the sessionid of the only visitor who may open it
    private_layouts: dict[str, str] = field(default_factory=dict)


@cache
def _chart_page_template() -> str:
    return resources.files(__package__).joinpath("chart_stub.html").read_text(encoding="utf-8")


def _state(request: Request[Any, Any, State]) -> StubState:
    state: StubState = request.app.state.stub
    return state


def _has_valid_session(cookies: dict[str, str]) -> bool:
    sessionid = cookies.get("sessionid", "")
    return bool(sessionid) and bool(cookies.get("sessionid_sign")) and not sessionid.startswith("expired")


def _user_of(cookies: dict[str, str]) -> dict[str, Any] | None:
    """The TradingView user a valid session signs in as: stable per sessionid."""
    if not _has_valid_session(cookies):
        return None
    digest = hashlib.sha256(cookies["sessionid"].encode()).hexdigest()
    return {"id": int(digest[:7], 16), "username": f"trader_{digest[:8]}", "is_pro": True}


def _mode(request: Request[Any, Any, State]) -> str:
    mode = request.query_params.get("stub_mode") or _state(request).mode
    if mode not in STUB_MODES:
        raise ValidationException(f"stub_mode must be one of {', '.join(STUB_MODES)}")
    return mode


async def _record_request(request: Request[Any, Any, State]) -> None:
    if request.url.path.startswith("/_stub/"):
        return
    _state(request).requests.append(
        {
            "method": request.method,
            # As sent: Litestar's routing drops a trailing slash from request.url.path.
            "path": request.scope.get("raw_path", b"").decode("latin-1").split("?", 1)[0] or request.url.path,
            "query": dict(request.query_params.items()),
            "cookies": dict(request.cookies),
            "logged_in": _has_valid_session(dict(request.cookies)),
            "user_agent": request.headers.get("user-agent", ""),
            "received_at": time.time(),
        }
    )


@get("/chart/{layout:str}", media_type=MediaType.HTML, sync_to_thread=False)
def layout_page(request: Request[Any, Any, State], layout: FromPath[str]) -> Response[str] | Redirect:
    return _chart_page(request, layout)


@get("/chart", media_type=MediaType.HTML, sync_to_thread=False)
def default_layout_page(request: Request[Any, Any, State]) -> Response[str] | Redirect:
    return _chart_page(request, "")


@get("/", media_type=MediaType.HTML, sync_to_thread=False)
def home_page(request: Request[Any, Any, State]) -> Response[str]:
    """TradingView's home page: the signed-in user's data is embedded in it, and only then."""
    mode = _mode(request)
    if mode in ("500", "captcha"):
        return _failure_page(mode)
    user = _user_of(dict(request.cookies))
    if user is None:
        init = {"user": {"is_pro": False}, "is_authenticated": False}
    else:
        token = hashlib.sha256(f"auth|{user['id']}".encode()).hexdigest()
        init = {"user": {**user, "auth_token": token}, "is_authenticated": True}
    data = json.dumps(init).replace("</", "<\\/")
    return Response(_HOME_PAGE.replace("__INIT__", data), media_type=MediaType.HTML)


def _chart_page(request: Request[Any, Any, State], layout: str) -> Response[str] | Redirect:
    stub = _state(request)
    params = request.query_params
    mode = _mode(request)
    if mode in ("500", "captcha"):
        return _failure_page(mode)
    cookies = dict(request.cookies)
    owner = stub.private_layouts.get(layout)
    if owner is not None and not (_has_valid_session(cookies) and cookies["sessionid"] == owner):
        # As TradingView does for a private layout without access: the default chart, same symbol.
        fallback = {key: value for key, value in params.items() if key in ("symbol", "interval")}
        return Redirect(f"/chart/?{urlencode(fallback)}", status_code=302)
    delay = params.get("stub_delay_ms")
    symbol = params.get("symbol") or "NASDAQ:AAPL"
    config = {
        "layout": layout,
        "symbol": symbol,
        "interval": params.get("interval") or "1D",
        "loggedIn": _has_valid_session(cookies),
        "user": _user_of(cookies),
        "renderDelayMs": int(delay) if delay and delay.isdigit() else stub.render_delay_ms,
        "mode": mode,
        "page": _page(request),
        "latePaneMs": HEAVY_LATE_PANE_MS,
        "topToolbarPx": TOP_TOOLBAR_PX,
        "leftToolbarPx": LEFT_TOOLBAR_PX,
    }
    # "</" must not appear inside the inline script, whatever the symbol holds.
    config_json = json.dumps(config).replace("</", "<\\/")
    page = (
        _chart_page_template()
        .replace("__TITLE__", html.escape(f"{symbol} — TradingView"))
        .replace("__OVERLAY__", "rgb({}, {}, {})".format(*OVERLAY_RGB))
        .replace("__CONFIG__", config_json)
    )
    return Response(page, media_type=MediaType.HTML)


def _page(request: Request[Any, Any, State]) -> str:
    page = request.query_params.get("stub_page") or _state(request).page
    if page not in STUB_PAGES:
        raise ValidationException(f"stub_page must be one of {', '.join(STUB_PAGES)}")
    return page


@cache
def heavy_script() -> str:
    """Several MB of JavaScript that the page must parse and partly run, as TradingView's bundles are:
    thousands of small functions (compiled lazily, parsed all the same) and a large data literal it reads."""
    functions = []
    index = 0
    size = 0
    while size < HEAVY_SCRIPT_BYTES // 2:
        body = f"const c=a*{index % 97}+b;return c>{index}?c-{index}:c+{index % 13};"
        text = f"function tv_{index}(a,b){{{body}}}\n"
        functions.append(text)
        size += len(text)
        index += 1
    rows = []
    size = 0
    row = 0
    while size < HEAVY_SCRIPT_BYTES // 2:
        text = f'[{row},{row * 7 % 1000},{row * 13 % 997},"s{row % 50}"],'
        rows.append(text)
        size += len(text)
        row += 1
    return (
        "".join(functions)
        + "window.__tvData=["
        + "".join(rows)
        + "];window.__tvSum=window.__tvData.reduce((t,r)=>t+tv_7(r[1],r[2]),0);\n"
    )


@get("/_stub/heavy.js", media_type="application/javascript", sync_to_thread=False)
def heavy_js() -> str:
    return heavy_script()


def feed_bars(symbol: str, interval: str, count: int) -> list[list[float]]:
    """The bars the heavy page's data feed sends: the same for the same symbol and interval."""
    generator = random.Random(f"{symbol}|{interval}")
    close = 50 + generator.random() * 950
    bars = []
    for _ in range(count):
        open_ = close
        close = max(1.0, open_ * (1 + (generator.random() - 0.5) * 0.02))
        high = max(open_, close) * (1 + generator.random() * 0.01)
        low = min(open_, close) * (1 - generator.random() * 0.01)
        bars.append([round(open_, 4), round(high, 4), round(low, 4), round(close, 4)])
    return bars


@websocket("/_stub/feed")
async def data_feed(socket: WebSocket[Any, Any, Any]) -> None:
    """Streams the heavy page's bars in chunks over HEAVY_FEED_SECONDS, as a market data feed arrives."""
    await socket.accept()
    params = socket.query_params
    bars = feed_bars(params.get("symbol") or "NASDAQ:AAPL", params.get("interval") or "1D", HEAVY_BARS)
    size = len(bars) // HEAVY_FEED_CHUNKS + 1
    for start in range(0, len(bars), size):
        await socket.send_json({"bars": bars[start : start + size]})
        await asyncio.sleep(HEAVY_FEED_SECONDS / HEAVY_FEED_CHUNKS)
    await socket.send_json({"done": True})
    await socket.close()


def _failure_page(mode: str) -> Response[str]:
    if mode == "captcha":
        return Response(_CHALLENGE_PAGE, status_code=403, media_type=MediaType.HTML)
    return Response(_ERROR_PAGE, status_code=500, media_type=MediaType.HTML)


@post("/_stub/private_layouts", status_code=200, sync_to_thread=False)
def add_private_layout(request: Request[Any, Any, State], data: JSONBody[dict[str, Any]]) -> dict[str, Any]:
    """Makes `layout` private to the visitor whose sessionid is `owner_sessionid`."""
    layout, owner = data.get("layout"), data.get("owner_sessionid")
    if not isinstance(layout, str) or not layout or not isinstance(owner, str) or not owner:
        raise ValidationException("layout and owner_sessionid must be non-empty strings")
    _state(request).private_layouts[layout] = owner
    return {"layout": layout}


@get("/_stub/requests", sync_to_thread=False)
def list_requests(request: Request[Any, Any, State]) -> list[dict[str, Any]]:
    return list(_state(request).requests)


@delete("/_stub/requests", status_code=204, sync_to_thread=False)
def clear_requests(request: Request[Any, Any, State]) -> None:
    _state(request).requests.clear()


@get("/_stub/mode", sync_to_thread=False)
def get_mode(request: Request[Any, Any, State]) -> dict[str, Any]:
    stub = _state(request)
    return {"mode": stub.mode, "page": stub.page, "render_delay_ms": stub.render_delay_ms}


@post("/_stub/mode", status_code=200, sync_to_thread=False)
def set_mode(request: Request[Any, Any, State], data: JSONBody[dict[str, Any]]) -> dict[str, Any]:
    stub = _state(request)
    if "mode" in data:
        if data["mode"] not in STUB_MODES:
            raise ValidationException(f"mode must be one of {', '.join(STUB_MODES)}")
        stub.mode = data["mode"]
    if "page" in data:
        if data["page"] not in STUB_PAGES:
            raise ValidationException(f"page must be one of {', '.join(STUB_PAGES)}")
        stub.page = data["page"]
    if "render_delay_ms" in data:
        delay = data["render_delay_ms"]
        if not isinstance(delay, int) or isinstance(delay, bool) or delay < 0:
            raise ValidationException("render_delay_ms must be a non-negative integer")
        stub.render_delay_ms = delay
    return {"mode": stub.mode, "page": stub.page, "render_delay_ms": stub.render_delay_ms}


def create_chart_stub_app(*, render_delay_ms: int = 300, mode: StubMode = "ok") -> Litestar:
    return Litestar(
        route_handlers=[
            home_page,
            heavy_js,
            data_feed,
            layout_page,
            default_layout_page,
            add_private_layout,
            list_requests,
            clear_requests,
            get_mode,
            set_mode,
        ],
        before_request=_record_request,
        state=State({"stub": StubState(mode=mode, render_delay_ms=render_delay_ms)}),
        openapi_config=None,
    )


def run_chart_stub(host: str = "127.0.0.1", port: int = 8090, *, render_delay_ms: int = 300) -> None:
    """Serves the stub until SIGTERM or SIGINT."""
    uvicorn.run(
        create_chart_stub_app(render_delay_ms=render_delay_ms),
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=5,
    )


_ERROR_PAGE = """<!doctype html>
<html><head><title>500 — TradingView</title></head>
<body><h1>Something went wrong</h1><p>Please try again later.</p></body></html>
"""

# What a WAF's bot challenge looks like from outside: 403, a challenge form, no site content.
_CHALLENGE_PAGE = """<!doctype html>
<html><head><title>Just a moment...</title></head>
<body><div id="challenge-form" class="cf-challenge"><h1>Checking your browser</h1>
<div class="g-recaptcha" data-sitekey="stub"></div></div></body></html>
"""

_HOME_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>TradingView — Track All Markets</title></head>
<body><header class="tv-header"><button data-name="header-user-menu-button">Menu</button></header>
<main><h1>Look first / Then leap.</h1></main>
<script>window.initData = __INIT__;</script>
</body></html>
"""
