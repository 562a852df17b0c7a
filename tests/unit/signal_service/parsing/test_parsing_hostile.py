"""Hostile and broken bodies: never raised on, always answered promptly, never dropped."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from signal_service.parsing import MAX_PARSE_CHARS, ParseStatus, parse_alert

RECEIVED_AT = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)
STANDARD = "🚨 ADX DEF [APIDEVS]\nSeñal: Cruce Alcista\nTicker: BINANCE:BTCUSDT\nPrecio: 67890\n"


def test_64_kib_of_emoji_fails_cleanly() -> None:
    body = ("🚨" * (65_536 // 4)).encode()
    result = parse_alert(body, received_at=RECEIVED_AT)
    assert result.status is ParseStatus.FAILED
    assert result.text == body.decode()


def test_10000_lines_are_read_up_to_the_cap() -> None:
    body = (STANDARD + "Nota: relleno\n" * 10_000).encode()
    result = parse_alert(body, received_at=RECEIVED_AT)
    assert result.status is ParseStatus.COMPLETE
    assert "lines_truncated" in result.problems
    assert len(result.extra["Nota"]) < 1_000


def test_10000_blank_lines_before_the_message_are_not_read_forever() -> None:
    result = parse_alert(b"\n" * 10_000 + STANDARD.encode(), received_at=RECEIVED_AT)
    assert result.status is ParseStatus.COMPLETE


@pytest.mark.parametrize("depth", [100, 1_000, 100_000])
def test_deeply_nested_json_is_bounded(depth: int) -> None:
    body = ('{"a":' * depth + '"x"' + "}" * depth).encode()
    result = parse_alert(body, content_type="application/json", received_at=RECEIVED_AT)
    assert result.status is ParseStatus.FAILED
    assert not any(problem.startswith("internal_error") for problem in result.problems)
    json.dumps(result.extra)


def test_deeply_nested_arrays_are_bounded() -> None:
    body = ("[" * 50_000 + "]" * 50_000).encode()
    result = parse_alert(body, received_at=RECEIVED_AT)
    assert result.status is ParseStatus.FAILED
    assert "json_too_complex" in result.problems


def test_nested_json_fields_past_the_depth_limit_are_not_read() -> None:
    document: dict = {"ticker": "BINANCE:BTCUSDT"}
    for _ in range(40):
        document = {"data": document}
    result = parse_alert(json.dumps(document).encode(), received_at=RECEIVED_AT)
    assert result.ticker is None
    assert "json_too_deep" in result.problems
    json.dumps(result.extra)


@pytest.mark.parametrize("body", [b"[]", b"42", b"true", b'"  "', b"[1, 2, 3]"])
def test_json_that_is_not_an_object_fails(body: bytes) -> None:
    result = parse_alert(body, content_type="application/json", received_at=RECEIVED_AT)
    assert result.status is ParseStatus.FAILED


def test_oversized_body_is_cut_but_kept_whole_in_text() -> None:
    body = STANDARD.encode() + b"x" * (MAX_PARSE_CHARS * 4)
    result = parse_alert(body, received_at=RECEIVED_AT)
    assert "input_truncated" in result.problems
    assert result.status is ParseStatus.COMPLETE
    assert result.text == body.decode()


def test_invalid_utf8_is_replaced_not_refused() -> None:
    result = parse_alert(b"\xff\xfe\xfa" + STANDARD.encode() + b"\xc3", received_at=RECEIVED_AT)
    assert "invalid_utf8" in result.problems
    assert "\ufffd" in result.text
    assert result.ticker == "BINANCE:BTCUSDT"


def test_nul_bytes_are_removed_from_text() -> None:
    result = parse_alert(b"\x00" * 1_000 + STANDARD.encode(), received_at=RECEIVED_AT)
    assert "\x00" not in result.text
    assert result.status is ParseStatus.COMPLETE


def test_huge_json_numbers_do_not_break_the_parser() -> None:
    body = b'{"ticker": "BINANCE:BTCUSDT", "price": ' + b"9" * 5_000 + b', "signal": "buy"}'
    result = parse_alert(body, received_at=RECEIVED_AT)
    assert result.ticker == "BINANCE:BTCUSDT"
    assert result.price is None
    json.dumps(result.extra)


def test_received_at_is_converted_to_utc() -> None:
    madrid = timezone(timedelta(hours=1))
    result = parse_alert(b"BTCUSDT Crossing 1", received_at=datetime(2026, 11, 27, 16, 0, tzinfo=madrid))
    assert result.alert_time == RECEIVED_AT
    assert result.alert_time.tzinfo is UTC


def test_naive_received_at_is_taken_as_utc_and_reported() -> None:
    result = parse_alert(b"BTCUSDT Crossing 1", received_at=datetime(2026, 11, 27, 15, 0))
    assert result.alert_time == RECEIVED_AT
    assert "received_at_naive" in result.problems
