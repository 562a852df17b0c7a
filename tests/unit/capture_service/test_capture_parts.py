"""Chart URLs, session cookies, PNG headers, object keys, failure reasons, queue routing, settings."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import dramatiq
import pytest
from dramatiq.middleware import TimeLimitExceeded
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pydantic import ValidationError

from apidevs.alerts.v1 import resources_pb2, signal_service_pb2
from capture_service import browser
from capture_service.browser import Cookie, find_chromium
from capture_service.capture import TradingViewSession, chart_url, png_dimensions
from capture_service.errors import (
    BrowserUnavailableError,
    ChartTimeoutError,
    SessionInvalidError,
    SessionMissingError,
    StorageUnavailableError,
)
from capture_service.settings import CaptureSettings
from capture_service.tasks import (
    CAPTURE_ACTOR_NAMES,
    capture_priority,
    decode_report,
    encode_report,
    failure_reason,
    infrastructure_backoff_ms,
)
from mesh.queues import PLANS_BY_PRIORITY, capture_actor

text = st.text(min_size=1, max_size=40)


def test_chart_url_has_layout_symbol_and_interval() -> None:
    assert (
        chart_url("https://www.tradingview.com", "AbC123", "BINANCE:BTCUSDT", "15")
        == "https://www.tradingview.com/chart/AbC123/?symbol=BINANCE%3ABTCUSDT&interval=15"
    )


def test_chart_url_without_interval_or_layout() -> None:
    assert (
        chart_url("http://127.0.0.1:8090/", "", "NASDAQ:AAPL")
        == "http://127.0.0.1:8090/chart/?symbol=NASDAQ%3AAAPL"
    )


@given(chart_id=text, ticker=text, interval=st.text(max_size=10))
def test_chart_url_carries_any_input_back_unchanged(chart_id: str, ticker: str, interval: str) -> None:
    parts = urlsplit(chart_url("https://www.tradingview.com", chart_id, ticker, interval))

    assert parts.netloc == "www.tradingview.com"
    assert parts.path.startswith("/chart/")
    assert parts.path.endswith("/")
    assert unquote(parts.path[len("/chart/") : -1]) == chart_id
    query = parse_qs(parts.query, keep_blank_values=True)
    expected = {"symbol": [ticker], **({"interval": [interval]} if interval else {})}
    assert query == expected
    assert not parts.fragment


@pytest.mark.parametrize(
    ("url", "domain", "secure"),
    [
        ("https://www.tradingview.com/chart/x/?symbol=A", ".tradingview.com", True),
        ("https://uk.tradingview.com/chart/x/", ".tradingview.com", True),
        ("http://127.0.0.1:8090/chart/x/", "127.0.0.1", False),
        ("http://[::1]:8090/chart/x/", "::1", False),
        ("http://localhost:8090/chart/x/", "localhost", False),
    ],
)
def test_session_cookies_are_scoped_to_the_chart_site(url: str, domain: str, secure: bool) -> None:
    session = TradingViewSession(sessionid="sid", sessionid_sign="sign")

    assert session.cookies(url) == [
        Cookie(name="sessionid", value="sid", domain=domain, secure=secure),
        Cookie(name="sessionid_sign", value="sign", domain=domain, secure=secure),
    ]


def test_session_document_parses_and_never_shows_in_repr() -> None:
    session = TradingViewSession.from_json(b'{"sessionid": "s3cr3t", "sessionid_sign": "v.s1gn"}')

    assert (session.sessionid, session.sessionid_sign) == ("s3cr3t", "v.s1gn")
    assert "s3cr3t" not in repr(session)
    assert "s1gn" not in repr(session)


@pytest.mark.parametrize(
    "document",
    [
        b"",
        b"[]",
        b'{"sessionid": "a"}',
        b'{"sessionid": "a", "sessionid_sign": 1}',
        b'{"sessionid": "", "sessionid_sign": "b"}',
    ],
)
def test_incomplete_session_documents_are_rejected(document: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - JSON errors and our own, several messages
        TradingViewSession.from_json(document)


@given(
    st.one_of(
        st.binary(max_size=200),
        st.fixed_dictionaries(
            {"sessionid": st.none() | st.integers() | st.text(), "sessionid_sign": st.none() | st.text()}
        ).map(lambda value: json.dumps(value).encode()),
        st.recursive(
            st.none() | st.booleans() | st.integers() | text,
            lambda inner: st.lists(inner) | st.dictionaries(text, inner),
        ).map(lambda value: json.dumps(value).encode()),
    )
)
def test_any_session_document_parses_or_is_a_value_error(document: bytes) -> None:
    try:
        session = TradingViewSession.from_json(document)
    except ValueError:
        return
    assert session.sessionid
    assert session.sessionid_sign


@settings(deadline=None)
@given(width=st.integers(1, 2000), height=st.integers(1, 2000))
def test_png_dimensions_reads_the_header(width: int, height: int) -> None:
    buffer = io.BytesIO()
    Image.new("1", (width, height)).save(buffer, format="PNG")

    assert png_dimensions(buffer.getvalue()) == (width, height)


@pytest.mark.parametrize("data", [b"", b"GIF89a" + b"\0" * 30, b"\x89PNG\r\n\x1a\n" + b"\0" * 8])
def test_png_dimensions_rejects_anything_else(data: bytes) -> None:
    with pytest.raises(ValueError, match="not a PNG"):
        png_dimensions(data)


@pytest.mark.parametrize(
    ("exception", "reason"),
    [
        (ChartTimeoutError("slow"), "timeout"),
        (SessionInvalidError("logged out"), "tradingview_session_invalid"),
        (SessionMissingError("none"), "tradingview_session_missing"),
        (BrowserUnavailableError("gone"), "browser_error"),
        (TimeLimitExceeded(), "timeout"),
        (RuntimeError("other"), "worker_error"),
    ],
)
def test_failure_reasons(exception: BaseException, reason: str) -> None:
    assert failure_reason(exception) == reason


def test_failure_reason_looks_through_retry_and_wrappers() -> None:
    def raised(exception: BaseException, cause: BaseException) -> BaseException:
        try:
            raise exception from cause
        except BaseException as caught:
            return caught

    assert (
        failure_reason(raised(dramatiq.Retry("again"), StorageUnavailableError("down")))
        == "storage_unavailable"
    )
    assert failure_reason(raised(RuntimeError("coroutine stuck"), TimeLimitExceeded())) == "timeout"


def test_infrastructure_waits_double_from_the_minimum_up_to_the_maximum() -> None:
    settings = CaptureSettings(
        capture_infrastructure_min_backoff_ms=500, capture_infrastructure_max_backoff_ms=4000
    )

    # Doubling to the cap, each drawn from the upper half of its ceiling (mesh.loops.backoff_delay).
    ceilings = [500, 1000, 2000, 4000, 4000, 4000]
    for waits, ceiling in enumerate(ceilings):
        assert ceiling / 2 <= infrastructure_backoff_ms(settings, waits) <= ceiling
    assert 2000 <= infrastructure_backoff_ms(settings, 10_000) <= 4000


@given(
    signal_id=st.uuids().map(str),
    object_key=st.text(max_size=200),
    error=st.text(max_size=100),
    attempt=st.integers(min_value=0, max_value=1_000),
)
def test_a_held_report_survives_its_trip_through_a_message_option(
    signal_id: str, object_key: str, error: str, attempt: int
) -> None:
    report = signal_service_pb2.ReportCaptureRequest(
        signal_id=signal_id,
        status=resources_pb2.SCREENSHOT_STATUS_COMPLETED,
        object_key=object_key,
        error=error,
        attempt=attempt,
    )
    option = encode_report(report)

    assert json.loads(json.dumps({"held_report": option}))["held_report"] == option
    assert decode_report(option) == report


def test_each_plan_has_its_own_actor_and_premium_comes_first() -> None:
    priorities = [capture_priority(plan) for plan in PLANS_BY_PRIORITY]

    assert PLANS_BY_PRIORITY[0] == "premium"
    assert priorities == sorted(set(priorities))
    assert {capture_actor(plan) for plan in ("premium", "pro", "basic", "free")} == CAPTURE_ACTOR_NAMES
    assert capture_actor("premium") == "capture_screenshot_premium"


def test_settings_refuse_a_browser_budget_beyond_the_time_limit() -> None:
    with pytest.raises(ValidationError, match="TIMEOUT_SECONDS"):
        CaptureSettings(capture_timeout_seconds=30, capture_time_limit_seconds=30)


def test_find_chromium_prefers_configured_then_bundled_then_the_systems_headless_shell(
    tmp_path: Path, monkeypatch
) -> None:
    configured = tmp_path / "configured-chrome"
    bundled = tmp_path / "bundled-chrome"
    system_dir = tmp_path / "bin"
    system_dir.mkdir()
    full_browser = system_dir / "chromium"
    headless_shell = system_dir / "chromium-headless-shell"
    for executable in (configured, bundled, full_browser, headless_shell):
        executable.write_text("#!/bin/sh\n")
        executable.chmod(executable.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(browser, "SYSTEM_CHROMIUM_CANDIDATES", ("chromium-headless-shell", "chromium"))
    monkeypatch.setenv("PATH", str(system_dir))

    assert find_chromium(configured, str(bundled)) == configured
    assert find_chromium(None, str(bundled)) is None
    assert find_chromium(None, str(tmp_path / "not-installed")) == headless_shell
    headless_shell.unlink()
    assert find_chromium(None, str(tmp_path / "not-installed")) == full_browser
    with pytest.raises(FileNotFoundError, match="ALERTS_CHROMIUM_PATH"):
        find_chromium(tmp_path / "missing", str(bundled))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="playwright install chromium"):
        find_chromium(None, "")
