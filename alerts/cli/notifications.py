"""`alerts notifications failed|retry`: notification deliveries that failed or died, listed and re-sent."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from alerts.cli.failures import list_pages, register_failed_and_retry, retry


def register(commands: Any) -> None:
    register_failed_and_retry(
        commands,
        "notifications",
        help="notification deliveries that failed",
        failed_help="list FAILED and DEAD deliveries, newest first, with the reason",
        retry_help="deliver FAILED and DEAD deliveries again",
        all_help="every FAILED or DEAD delivery",
        list_failed=list_failed,
        retry_failed=retry_failed,
    )


def list_failed(options: argparse.Namespace) -> int:
    from apidevs.alerts.v1 import resources_pb2, signal_service_pb2

    deliveries = list_pages(
        options, "ListFailedNotifications", signal_service_pb2.ListFailedNotificationsRequest, "deliveries"
    )
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
    from apidevs.alerts.v1 import signal_service_pb2

    count = retry(options, "RetryNotifications", signal_service_pb2.RetryNotificationsRequest)
    print(f"signals queued for delivery again: {count}")
    return 0
