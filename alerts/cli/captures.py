"""`alerts captures failed|retry`: screenshot captures that failed, listed and re-queued."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from alerts.cli.clients import call_signal_service, signal_service_client

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
    captures = commands.add_parser("captures", help="screenshot captures that failed")
    capture_commands = captures.add_subparsers(dest="captures_command", required=True)
    failed = capture_commands.add_parser("failed", help="list FAILED captures, newest first, with the reason")
    failed.add_argument("--user", help="only this user's (user id)")
    failed.add_argument("--limit", type=int, default=1000, help="at most this many (default 1000)")
    failed.add_argument("--json", action="store_true", help="one JSON object per line")
    failed.set_defaults(handler=list_failed)
    retry = capture_commands.add_parser("retry", help="put FAILED captures back on their queues")
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", dest="all_failed", action="store_true", help="every FAILED capture")
    which.add_argument("signal_ids", nargs="*", default=[], metavar="SIGNAL_ID")
    retry.set_defaults(handler=retry_failed)


def list_failed(options: argparse.Namespace) -> int:
    from apidevs.alerts.v1 import resources_pb2, signal_service_pb2, signal_service_pb2_grpc
    from mesh.grpc import open_channel

    address, key = signal_service_client()

    async def list_signals() -> list[resources_pb2.Signal]:
        signals: list[resources_pb2.Signal] = []
        async with open_channel(address, key) as channel:
            stub = signal_service_pb2_grpc.SignalServiceStub(channel)
            page_token = ""
            while True:
                page = await stub.ListFailedCaptures(
                    signal_service_pb2.ListFailedCapturesRequest(
                        user_id=options.user or "", page_size=100, page_token=page_token
                    )
                )
                signals.extend(page.signals)
                page_token = page.next_page_token
                if not page_token or len(signals) >= options.limit:
                    return signals[: options.limit]

    signals = call_signal_service(address, list_signals)
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
    from apidevs.alerts.v1 import signal_service_pb2, signal_service_pb2_grpc
    from mesh.grpc import open_channel

    address, key = signal_service_client()

    async def retry() -> int:
        async with open_channel(address, key) as channel:
            answer = await signal_service_pb2_grpc.SignalServiceStub(channel).RetryCaptures(
                signal_service_pb2.RetryCapturesRequest(
                    signal_ids=options.signal_ids, all_failed=options.all_failed
                )
            )
            return answer.requeued_count

    print(f"captures re-queued: {call_signal_service(address, retry)}")
    return 0
