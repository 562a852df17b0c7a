"""The session check's one request against the chart stub playing TradingView's home page."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from litestar import Litestar, get
from litestar.response import Redirect

from capture_service.capture import TradingViewSession
from capture_service.session_probe import probe_session
from tests.integration.capture_service.conftest import ChartStub
from tests.support import asgi_app_in_thread

GOOD = TradingViewSession(sessionid="user-a-session", sessionid_sign="user-a-sign")
EXPIRED = TradingViewSession(sessionid="expired-a-session", sessionid_sign="user-a-sign")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as http:
        yield http


async def test_a_valid_session_is_signed_in_as_its_user(
    chart_stub: ChartStub, client: httpx.AsyncClient
) -> None:
    probe = await probe_session(client, chart_stub.base_url, GOOD)

    assert probe.verdict == "valid"
    assert probe.username.startswith("trader_")
    assert probe.tradingview_user_id.isdigit()
    assert probe.requests == 1
    (received,) = await chart_stub.requests()
    assert received["path"] == "/"
    assert received["cookies"] == {"sessionid": GOOD.sessionid, "sessionid_sign": GOOD.sessionid_sign}


async def test_an_expired_session_is_invalid(chart_stub: ChartStub, client: httpx.AsyncClient) -> None:
    probe = await probe_session(client, chart_stub.base_url, EXPIRED)

    assert (probe.verdict, probe.detail) == ("invalid", "Wrong or expired sessionid/signature")


@pytest.mark.parametrize("mode", ["captcha", "500"])
async def test_a_challenge_or_an_outage_is_never_taken_for_an_invalid_session(
    chart_stub: ChartStub, client: httpx.AsyncClient, mode: str
) -> None:
    await chart_stub.configure(mode=mode)

    for session in (GOOD, EXPIRED):
        assert (await probe_session(client, chart_stub.base_url, session)).verdict == "unknown"


async def test_an_unreachable_tradingview_is_unknown(client: httpx.AsyncClient) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    probe = await probe_session(client, f"http://127.0.0.1:{port}", GOOD)

    assert probe.verdict == "unknown"


@get("/", sync_to_thread=False)
def off_site() -> Redirect:
    return Redirect("https://example.invalid/collect", status_code=302)


async def test_the_cookies_never_follow_a_redirect_off_the_site(client: httpx.AsyncClient) -> None:
    with asgi_app_in_thread(Litestar([off_site], openapi_config=None)) as url:
        probe = await probe_session(client, url, GOOD)

    assert (probe.verdict, probe.requests) == ("unknown", 1)
    assert probe.detail == "TradingView redirected off its site"
