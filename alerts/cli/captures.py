"""`alerts captures failed|retry`: screenshot captures that failed, listed and re-queued."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from alerts.cli.clients import call_signal_service, signal_service_client


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
