"""The chart stub's HTTP behaviour, in process: sessions, failure modes, the request log, escaping."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from capture_service.chart_stub import create_chart_stub_app


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_chart_stub_app()) as test_client:
        yield test_client


def page_config(html: str) -> dict[str, object]:
    match = re.search(r"^const CONFIG = (.*);$", html, flags=re.MULTILINE)
    assert match, "no CONFIG in the page"
    return json.loads(match.group(1))


@pytest.mark.parametrize(
    ("cookies", "logged_in"),
    [
        ({"sessionid": "abc", "sessionid_sign": "v1:sig"}, True),
        ({"sessionid": "expired-abc", "sessionid_sign": "v1:sig"}, False),
        ({"sessionid": "abc"}, False),
        ({"sessionid_sign": "v1:sig"}, False),
        ({}, False),
    ],
)
def test_the_page_is_logged_in_only_with_both_valid_cookies(
    client: TestClient, cookies: dict[str, str], logged_in: bool
) -> None:
    client.cookies.update(cookies)

    answer = client.get("/chart/layout1/", params={"symbol": "BINANCE:BTCUSDT", "interval": "15"})

    assert answer.status_code == 200
    config = page_config(answer.text)
    assert config["loggedIn"] is logged_in
    assert (config["symbol"], config["interval"], config["layout"]) == ("BINANCE:BTCUSDT", "15", "layout1")
    (recorded,) = client.get("/_stub/requests").json()
    assert recorded["cookies"] == cookies
    assert recorded["logged_in"] is logged_in
    assert recorded["path"] == "/chart/layout1/"
    assert recorded["query"] == {"symbol": "BINANCE:BTCUSDT", "interval": "15"}


def test_the_request_log_can_be_cleared(client: TestClient) -> None:
    client.get("/chart/", params={"symbol": "X"})

    assert client.delete("/_stub/requests").status_code == 204
    assert client.get("/_stub/requests").json() == []


def test_failure_modes_per_request_and_global(client: TestClient) -> None:
    assert client.get("/chart/a/", params={"stub_mode": "500"}).status_code == 500
    assert page_config(client.get("/chart/a/", params={"stub_mode": "hang"}).text)["mode"] == "hang"

    assert client.post("/_stub/mode", json={"mode": "crash", "render_delay_ms": 50}).json() == {
        "mode": "crash",
        "page": "light",
        "render_delay_ms": 50,
    }
    config = page_config(client.get("/chart/a/").text)
    assert (config["mode"], config["renderDelayMs"]) == ("crash", 50)
    assert page_config(client.get("/chart/a/", params={"stub_mode": "ok"}).text)["mode"] == "ok"


@pytest.mark.parametrize(
    "body",
    [
        {"mode": "explode"},
        {"page": "huge"},
        {"render_delay_ms": -1},
        {"render_delay_ms": "5"},
        {"render_delay_ms": True},
    ],
)
def test_invalid_stub_settings_are_refused(client: TestClient, body: dict[str, object]) -> None:
    assert client.post("/_stub/mode", json=body).status_code == 400
    assert client.get("/_stub/mode").json() == {"mode": "ok", "page": "light", "render_delay_ms": 300}


def test_an_unknown_mode_in_the_query_is_refused(client: TestClient) -> None:
    assert client.get("/chart/a/", params={"stub_mode": "explode"}).status_code == 400


@settings(deadline=None)
@given(
    symbol=st.text(min_size=1, max_size=60).filter(
        lambda value: value.strip() == value and "\x00" not in value
    )
)
def test_any_symbol_reaches_the_page_script_intact_and_cannot_close_it(symbol: str) -> None:
    with TestClient(create_chart_stub_app()) as test_client:
        html = test_client.get("/chart/a/", params={"symbol": symbol}).text

    assert page_config(html)["symbol"] == symbol
    script = html[html.index("<script>") : html.rindex("</script>")]
    assert "</script" not in script.lower()[len("<script>") :]


def test_the_home_page_embeds_the_users_data_only_for_a_valid_session(client: TestClient) -> None:
    anonymous = client.get("/")
    client.cookies.update({"sessionid": "abc", "sessionid_sign": "v1:sig"})
    signed_in = client.get("/")

    assert anonymous.status_code == signed_in.status_code == 200
    assert "auth_token" not in anonymous.text
    assert '"username"' not in anonymous.text
    assert re.search(r'"auth_token": "[0-9a-f]{64}"', signed_in.text)
    assert re.search(r'"id": \d+', signed_in.text)
    assert '"username": "trader_' in signed_in.text


def test_an_anonymous_chart_carries_no_user_and_no_sign_in_ui_in_its_markup(client: TestClient) -> None:
    page = client.get("/chart/", params={"symbol": "X"}).text

    assert page_config(page)["user"] is None
    assert 'data-dialog-name="sign-in"' not in page


def test_captcha_mode_answers_every_page_with_a_challenge(client: TestClient) -> None:
    client.post("/_stub/mode", json={"mode": "captcha"})

    for path in ("/", "/chart/layout1/"):
        answer = client.get(path)
        assert answer.status_code == 403
        assert "challenge-form" in answer.text


def test_a_private_layout_falls_back_to_the_default_chart_for_other_visitors(client: TestClient) -> None:
    client.post("/_stub/private_layouts", json={"layout": "mine", "owner_sessionid": "owner"})

    client.cookies.update({"sessionid": "someone-else", "sessionid_sign": "sig"})
    visitor = client.get("/chart/mine/", params={"symbol": "X", "interval": "15"}, follow_redirects=False)
    client.cookies.update({"sessionid": "owner"})
    owner = client.get("/chart/mine/", params={"symbol": "X"}, follow_redirects=False)

    assert visitor.status_code == 302
    assert visitor.headers["location"] == "/chart/?symbol=X&interval=15"
    assert owner.status_code == 200
    assert page_config(owner.text)["layout"] == "mine"


def test_the_heavy_page_loads_megabytes_of_script_and_streams_its_bars(client: TestClient) -> None:
    client.post("/_stub/mode", json={"page": "heavy"})

    page = page_config(client.get("/chart/x/", params={"symbol": "BINANCE:BTCUSDT", "interval": "15"}).text)
    script = client.get("/_stub/heavy.js")
    with client.websocket_connect("/_stub/feed?symbol=BINANCE:BTCUSDT&interval=15") as feed:
        chunks = []
        while not (chunk := feed.receive_json()).get("done"):
            chunks.append(chunk["bars"])

    assert page["page"] == "heavy"
    assert len(script.content) >= 4 * 1024 * 1024
    assert sum(len(bars) for bars in chunks) == 5000
    assert len(chunks) > 10
