"""What `alerts captures` and `alerts notifications` share: a `failed` command listing what failed, newest
first, page by page, and a `retry` command putting it (or all of it) back."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from alerts.cli.clients import call_rpc, call_signal_service, signal_service_client

_PAGE_SIZE = 100


def register_failed_and_retry(
    commands: Any,
    group: str,
    *,
    help: str,
    failed_help: str,
    retry_help: str,
    all_help: str,
    list_failed: Callable[[argparse.Namespace], int],
    retry_failed: Callable[[argparse.Namespace], int],
) -> None:
    """`alerts <group> failed [--user ID] [--limit N] [--json]` and `alerts <group> retry --all|ID...`."""
    parser = commands.add_parser(group, help=help)
    subcommands = parser.add_subparsers(dest=f"{group}_command", required=True)
    failed = subcommands.add_parser("failed", help=failed_help)
    failed.add_argument("--user", help="only this user's (user id)")
    failed.add_argument("--limit", type=int, default=1000, help="at most this many (default 1000)")
    failed.add_argument("--json", action="store_true", help="one JSON object per line")
    failed.set_defaults(handler=list_failed)
    retry = subcommands.add_parser("retry", help=retry_help)
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", dest="all_failed", action="store_true", help=all_help)
    which.add_argument("signal_ids", nargs="*", default=[], metavar="SIGNAL_ID")
    retry.set_defaults(handler=retry_failed)


def list_pages(options: argparse.Namespace, method: str, request_type: Any, field: str) -> list[Any]:
    """The `field` entries of SignalService.`method`'s pages for ``--user``, at most ``--limit`` of them."""
    from apidevs.alerts.v1 import signal_service_pb2_grpc
    from mesh.grpc import open_channel

    address, key = signal_service_client()

    async def read() -> list[Any]:
        entries: list[Any] = []
        async with open_channel(address, key) as channel:
            call = getattr(signal_service_pb2_grpc.SignalServiceStub(channel), method)
            page_token = ""
            while True:
                page = await call(
                    request_type(user_id=options.user or "", page_size=_PAGE_SIZE, page_token=page_token)
                )
                entries.extend(getattr(page, field))
                page_token = page.next_page_token
                if not page_token or len(entries) >= options.limit:
                    return entries[: options.limit]

    return call_signal_service(address, read)


def retry(options: argparse.Namespace, method: str, request_type: Any) -> int:
    """How many signals SignalService.`method` put back: the ones named, or with ``--all`` every one."""
    from apidevs.alerts.v1 import signal_service_pb2_grpc

    answer = call_rpc(
        signal_service_pb2_grpc.SignalServiceStub,
        method,
        request_type(signal_ids=options.signal_ids, all_failed=options.all_failed),
        timeout=None,
    )
    return int(answer.requeued_count)
