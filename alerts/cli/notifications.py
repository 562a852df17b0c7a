"""`alerts notifications failed|retry`: notification deliveries that failed or died, listed and re-sent."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from alerts.cli.clients import call_signal_service, signal_service_client


def register(commands: Any) -> None:
    notifications = commands.add_parser("notifications", help="notification deliveries that failed")
    notification_commands = notifications.add_subparsers(dest="notifications_command", required=True)
    failed = notification_commands.add_parser(
        "failed", help="list FAILED and DEAD deliveries, newest first, with the reason"
    )
    failed.add_argument("--user", help="only this user's (user id)")
    failed.add_argument("--limit", type=int, default=1000, help="at most this many (default 1000)")
    failed.add_argument("--json", action="store_true", help="one JSON object per line")
    failed.set_defaults(handler=list_failed)
    retry = notification_commands.add_parser("retry", help="deliver FAILED and DEAD deliveries again")
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", dest="all_failed", action="store_true", help="every FAILED or DEAD delivery")
    which.add_argument("signal_ids", nargs="*", default=[], metavar="SIGNAL_ID")
    retry.set_defaults(handler=retry_failed)


def list_failed(options: argparse.Namespace) -> int:
    from apidevs.alerts.v1 import resources_pb2, signal_service_pb2, signal_service_pb2_grpc
    from mesh.grpc import open_channel

    address, key = signal_service_client()

    async def list_deliveries() -> list[resources_pb2.NotificationDelivery]:
        deliveries: list[resources_pb2.NotificationDelivery] = []
        async with open_channel(address, key) as channel:
            stub = signal_service_pb2_grpc.SignalServiceStub(channel)
            page_token = ""
            while True:
                page = await stub.ListFailedNotifications(
                    signal_service_pb2.ListFailedNotificationsRequest(
                        user_id=options.user or "", page_size=100, page_token=page_token
                    )
                )
                deliveries.extend(page.deliveries)
                page_token = page.next_page_token
                if not page_token or len(deliveries) >= options.limit:
                    return deliveries[: options.limit]

    deliveries = call_signal_service(address, list_deliveries)
    for delivery in deliveries:
        row = {
            "signal_id": delivery.signal_id,
            "channel": resources_pb2.NotificationChannel.Name(delivery.channel)
            .removeprefix("NOTIFICATION_CHANNEL_")
            .lower(),
            "kind": resources_pb2.NotificationKind.Name(delivery.kind)
            .removeprefix("NOTIFICATION_KIND_")
            .lower(),
            "status": resources_pb2.DeliveryStatus.Name(delivery.status)
            .removeprefix("DELIVERY_STATUS_")
            .lower(),
            "attempts": delivery.attempts,
            "updated_at": delivery.updated_at.ToDatetime().strftime("%Y-%m-%dT%H:%M:%SZ"),
            "last_error": delivery.last_error,
        }
        if options.json:
            print(json.dumps(row))
            continue
        print(
            f"{row['signal_id']}  {row['channel']}/{row['kind']}  {row['status']}  {row['updated_at']}  "
            f"attempts {row['attempts']}  {row['last_error'] or 'no reason recorded'}"
        )
    print(f"{len(deliveries)} failed delivery(ies)", file=sys.stderr)
    return 0


def retry_failed(options: argparse.Namespace) -> int:
    from apidevs.alerts.v1 import signal_service_pb2, signal_service_pb2_grpc
    from mesh.grpc import open_channel

    address, key = signal_service_client()

    async def retry() -> int:
        async with open_channel(address, key) as channel:
            answer = await signal_service_pb2_grpc.SignalServiceStub(channel).RetryNotifications(
                signal_service_pb2.RetryNotificationsRequest(
                    signal_ids=options.signal_ids, all_failed=options.all_failed
                )
            )
            return answer.requeued_count

    print(f"signals queued for delivery again: {call_signal_service(address, retry)}")
    return 0
