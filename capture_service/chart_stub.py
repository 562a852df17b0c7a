"""A local stand-in for TradingView's chart page, for tests and the offline demo.

It reproduces what the capture worker depends on and nothing more: the chart lives in
``div.chart-container`` with its canvases inside ``div.chart-gui-wrapper``, a loading spinner is shown
until the chart has drawn, cookie banners and promo dialogs float over the chart, and a visitor without a
valid session (``sessionid`` and ``sessionid_sign``, where a ``sessionid`` starting with ``expired``
counts as expired) gets TradingView's sign-in UI instead of their layout.

Candles are derived from the symbol and interval, so the same URL always draws the same picture.
Failure modes, per request with ``?stub_mode=`` or for every request with ``POST /_stub/mode``:
``hang`` (the spinner never goes away), ``500`` (HTTP 500) and ``crash`` (the page allocates until the
renderer process dies). ``GET /_stub/requests`` lists every request received with its cookies, so tests
can prove which session reached which capture; ``DELETE /_stub/requests`` clears the list.
"""

from __future__ import annotations

import html
import json
import time
from collections import deque
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Literal

import uvicorn
from litestar import Litestar, MediaType, Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.exceptions import ValidationException
from litestar.params import FromPath, JSONBody

StubMode = Literal["ok", "hang", "500", "crash"]
STUB_MODES: tuple[StubMode, ...] = ("ok", "hang", "500", "crash")

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
    render_delay_ms: int = 300
    requests: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=_MAX_RECORDED_REQUESTS))


@cache
def _chart_page_template() -> str:
    return resources.files(__package__).joinpath("chart_stub.html").read_text(encoding="utf-8")


def _state(request: Request[Any, Any, State]) -> StubState:
    state: StubState = request.app.state.stub
    return state


def _has_valid_session(cookies: dict[str, str]) -> bool:
    sessionid = cookies.get("sessionid", "")
    return bool(sessionid) and bool(cookies.get("sessionid_sign")) and not sessionid.startswith("expired")


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
def layout_page(request: Request[Any, Any, State], layout: FromPath[str]) -> Response[str]:
    return _chart_page(request, layout)


@get("/chart", media_type=MediaType.HTML, sync_to_thread=False)
def default_layout_page(request: Request[Any, Any, State]) -> Response[str]:
    return _chart_page(request, "")


def _chart_page(request: Request[Any, Any, State], layout: str) -> Response[str]:
    stub = _state(request)
    params = request.query_params
    mode = params.get("stub_mode") or stub.mode
    if mode not in STUB_MODES:
        raise ValidationException(f"stub_mode must be one of {', '.join(STUB_MODES)}")
    if mode == "500":
        return Response(_ERROR_PAGE, status_code=500, media_type=MediaType.HTML)
    delay = params.get("stub_delay_ms")
    symbol = params.get("symbol") or "NASDAQ:AAPL"
    config = {
        "layout": layout,
        "symbol": symbol,
        "interval": params.get("interval") or "1D",
        "loggedIn": _has_valid_session(dict(request.cookies)),
        "renderDelayMs": int(delay) if delay and delay.isdigit() else stub.render_delay_ms,
        "mode": mode,
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


@get("/_stub/requests", sync_to_thread=False)
def list_requests(request: Request[Any, Any, State]) -> list[dict[str, Any]]:
    return list(_state(request).requests)


@delete("/_stub/requests", status_code=204, sync_to_thread=False)
def clear_requests(request: Request[Any, Any, State]) -> None:
    _state(request).requests.clear()


@get("/_stub/mode", sync_to_thread=False)
def get_mode(request: Request[Any, Any, State]) -> dict[str, Any]:
    stub = _state(request)
    return {"mode": stub.mode, "render_delay_ms": stub.render_delay_ms}


@post("/_stub/mode", status_code=200, sync_to_thread=False)
def set_mode(request: Request[Any, Any, State], data: JSONBody[dict[str, Any]]) -> dict[str, Any]:
    stub = _state(request)
    if "mode" in data:
        if data["mode"] not in STUB_MODES:
            raise ValidationException(f"mode must be one of {', '.join(STUB_MODES)}")
        stub.mode = data["mode"]
    if "render_delay_ms" in data:
        delay = data["render_delay_ms"]
        if not isinstance(delay, int) or isinstance(delay, bool) or delay < 0:
            raise ValidationException("render_delay_ms must be a non-negative integer")
        stub.render_delay_ms = delay
    return {"mode": stub.mode, "render_delay_ms": stub.render_delay_ms}


def create_chart_stub_app(*, render_delay_ms: int = 300, mode: StubMode = "ok") -> Litestar:
    return Litestar(
        route_handlers=[layout_page, default_layout_page, list_requests, clear_requests, get_mode, set_mode],
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
