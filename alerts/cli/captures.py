"""`alerts captures failed|retry`: screenshot captures that failed, listed and re-queued."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from alerts.cli.failures import list_pages, register_failed_and_retry, retry

# What each failure reason asks of an operator (docs/operations.md has the full table).
FAILURE_ACTIONS = {
    "infrastructure_unavailable": (
        "a dependency (signal service, database, storage, Redis) stayed down past "
        "ALERTS_CAPTURE_INFRASTRUCTURE_DEADLINE_SECONDS: fix it, then `alerts captures retry --all`"
    ),
    "storage_unavailable": "storage was down through every retry: fix it, then retry",
    "signal_unavailable": "the signal service was down through every retry: fix it, then retry",
    "tradingview_session_invalid": "the user renews their TradingView session; captures re-queue then",
    "tradingview_session_missing": "the user stores a TradingView session",
    "tradingview_session_undecryptable": "a cookie key was removed too early: put it back",
    "layout_unavailable": "the user fixes default_chart_id or the alert's ?chart=",
    "WORKER_LOST": "workers died on every attempt: look at their memory and logs, then retry",
}


def failure_summary(reasons: list[str]) -> list[str]:
    """One line per reason, most frequent first, with what to do about the known ones."""
    counts: dict[str, int] = {}
    for reason in reasons:
        counts[reason or "no reason recorded"] = counts.get(reason or "no reason recorded", 0) + 1
    lines = []
    for reason, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        action = FAILURE_ACTIONS.get(reason)
        lines.append(f"  {count:>6}  {reason}" + (f": {action}" if action else ""))
    return lines


def register(commands: Any) -> None:
    register_failed_and_retry(
        commands,
        "captures",
        help="screenshot captures that failed",
        failed_help="list FAILED captures, newest first, with the reason",
        retry_help="put FAILED captures back on their queues",
        all_help="every FAILED capture",
        list_failed=list_failed,
        retry_failed=retry_failed,
    )


def list_failed(options: argparse.Namespace) -> int:
    from apidevs.alerts.v1 import signal_service_pb2

    signals = list_pages(
        options, "ListFailedCaptures", signal_service_pb2.ListFailedCapturesRequest, "signals"
    )
    for failed in signals:
        created = failed.created_at.ToDatetime().strftime("%Y-%m-%dT%H:%M:%SZ")
        if options.json:
            row = {
                "signal_id": failed.signal_id,
                "user_id": failed.user_id,
                "created_at": created,
                "ticker": failed.ticker,
                "screenshot_error": failed.screenshot_error,
            }
            print(json.dumps(row))
            continue
        print(
            f"{failed.signal_id}  user {failed.user_id}  {created}  {failed.ticker or '-'}  "
            f"{failed.screenshot_error or 'no reason recorded'}"
        )
    print(f"{len(signals)} failed capture(s)", file=sys.stderr)
    for line in failure_summary([failed.screenshot_error for failed in signals]):
        print(line, file=sys.stderr)
    return 0


def retry_failed(options: argparse.Namespace) -> int:
    from apidevs.alerts.v1 import signal_service_pb2

    print(f"captures re-queued: {retry(options, 'RetryCaptures', signal_service_pb2.RetryCapturesRequest)}")
    return 0
