"""ListSignals reads its pages in one statement on a plain connection (signals/repository.py SignalPages):
every filter, alone and with a page token, finds what it names, newest first, and each listed signal is
the message GetSignal (the session's read) makes of it."""

from __future__ import annotations

import json

from google.protobuf import timestamp_pb2

from apidevs.alerts.v1 import resources_pb2, signal_service_pb2
from tests.support import create_user, ingest_request

TICKERS = ("BINANCE:BTCUSDT", "BINANCE:ETHUSDT", "BINANCE:SOLUSDT")
SIGNAL_TYPES = ("buy", "sell")


def _json_alert(index: int) -> bytes:
    return json.dumps(
        {
            "ticker": TICKERS[index % 3],
            "price": f"{100 + index}.5",
            "signal": SIGNAL_TYPES[index % 2],
            "note": f"alert {index}",
        }
    ).encode()


async def _all_pages(signals, request: signal_service_pb2.ListSignalsRequest) -> list[resources_pb2.Signal]:
    listed, token = [], ""
    while True:
        request.page_token = token
        page = await signals.ListSignals(request)
        listed += page.signals
        token = page.next_page_token
        if not token:
            return listed


async def test_each_filter_pages_through_exactly_its_signals_newest_first(signals, users) -> None:
    created = await create_user(users)
    user_id = created.user.user_id
    stored = []
    for index in range(9):
        answer = await signals.IngestWebhook(
            ingest_request(created.webhook_token, _json_alert(index), content_type="application/json")
        )
        stored.append(
            await signals.GetSignal(signal_service_pb2.GetSignalRequest(signal_id=answer.signal_id))
        )
    for signal in stored[::4]:
        await signals.UpdateSignalOutcome(
            signal_service_pb2.UpdateSignalOutcomeRequest(
                signal_id=signal.signal_id, result=resources_pb2.SIGNAL_RESULT_WIN, profit_loss="1.5"
            )
        )
    newest_first = list(reversed(stored))
    after, before = timestamp_pb2.Timestamp(), timestamp_pb2.Timestamp()
    after.CopyFrom(stored[2].created_at)
    before.CopyFrom(stored[7].created_at)
    cases = {
        "ticker": ({"ticker": TICKERS[1]}, lambda signal: signal.ticker == TICKERS[1]),
        "signal_type": ({"signal_type": "sell"}, lambda signal: signal.signal_type == "sell"),
        "result": (
            {"result": resources_pb2.SIGNAL_RESULT_WIN},
            lambda signal: signal.signal_id in {won.signal_id for won in stored[::4]},
        ),
        "screenshot_status": (
            {"screenshot_status": stored[0].screenshot_status},
            lambda signal: True,
        ),
        "date_range": (
            {"created_after": after, "created_before": before},
            lambda signal: stored.index(signal) in range(3, 7),
        ),
        "ticker_and_type": (
            {"ticker": TICKERS[0], "signal_type": "buy"},
            lambda signal: signal.ticker == TICKERS[0] and signal.signal_type == "buy",
        ),
    }
    for name, (fields, wanted) in cases.items():
        listed = await _all_pages(
            signals, signal_service_pb2.ListSignalsRequest(user_id=user_id, page_size=2, **fields)
        )
        assert [signal.signal_id for signal in listed] == [
            signal.signal_id for signal in newest_first if wanted(signal)
        ], name
    nothing = await signals.ListSignals(
        signal_service_pb2.ListSignalsRequest(user_id=user_id, ticker="BINANCE:NEVERUSDT")
    )
    assert (list(nothing.signals), nothing.next_page_token) == ([], "")


async def test_a_listed_signal_is_the_message_get_signal_makes(signals, users) -> None:
    created = await create_user(users)
    bodies = [
        (_json_alert(0), "application/json"),
        (b"{not json", "application/json"),
        (b"Ticker: BINANCE:BTCUSDT\nPrice: 101\nSignal: buy", "text/plain"),
    ]
    ids = []
    for body, content_type in bodies:
        answer = await signals.IngestWebhook(
            ingest_request(created.webhook_token, body, content_type=content_type)
        )
        ids.append(answer.signal_id)
    await signals.UpdateSignalOutcome(
        signal_service_pb2.UpdateSignalOutcomeRequest(
            signal_id=ids[0], result=resources_pb2.SIGNAL_RESULT_LOSS, profit_loss="-2.25", notes="stopped"
        )
    )
    listed = await signals.ListSignals(signal_service_pb2.ListSignalsRequest(user_id=created.user.user_id))
    gotten = [
        await signals.GetSignal(signal_service_pb2.GetSignalRequest(signal_id=signal_id))
        for signal_id in reversed(ids)
    ]
    assert list(listed.signals) == gotten
    by_id = {signal.signal_id: signal for signal in listed.signals}
    # The JSON columns, decoded from the text the plain connection reads: an unknown key kept, a problem
    # recorded, and none of either where there are none.
    assert by_id[ids[0]].extra["note"] == "alert 0"
    assert (by_id[ids[0]].result, by_id[ids[0]].profit_loss) == (resources_pb2.SIGNAL_RESULT_LOSS, "-2.25")
    assert list(by_id[ids[1]].parse_problems)
    assert not by_id[ids[2]].HasField("extra")
    assert list(by_id[ids[2]].parse_problems) == []
