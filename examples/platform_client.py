"""A platform backend's view of the alerts service: list a user's signals, then follow their live events.

    .venv/bin/python examples/platform_client.py --addr 127.0.0.1:50051 --key "$ALERTS_API_KEY" \\
        --user 6f1c...-uuid --cursor-file /var/lib/platform/alerts.cursor

The essentials, for your own client:

    channel = grpc.aio.insecure_channel(addr, options=KEEPALIVE)       # grpc.aio.secure_channel in production
    stub = signal_service_pb2_grpc.SignalServiceStub(channel)
    auth = (("authorization", f"Bearer {api_key}"),)
    page = await stub.ListSignals(signal_service_pb2.ListSignalsRequest(user_id=user), metadata=auth)
    cursor = ""                                                        # "" = from now on; "0" = everything
    while True:
        try:
            request = signal_service_pb2.SubscribeSignalsRequest(
                user_id=user, after_cursor=cursor, max_events_per_message=500)   # events come in batches
            call = stub.SubscribeSignals(request, metadata=auth)
            cursor = cursor or dict(await call.initial_metadata())["x-start-cursor"]
            async for message in call:
                for event in message.events:
                    handle(event)                 # idempotent: keyed by event.cursor
                cursor = message.cursor           # the batch's last event; persist it to survive restarts
        except grpc.aio.AioRpcError as error:
            if error.code() not in RESUMABLE: raise
        await asyncio.sleep(backoff)              # then resume after the last cursor: no loss, no repeat

A stream ends with RESOURCE_EXHAUSTED (reason SUBSCRIBER_TOO_SLOW) when this client falls too far behind,
and with UNAVAILABLE when a server shuts down; both mean "resume from your last cursor".
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
from pathlib import Path

import grpc

from apidevs.alerts.v1 import resources_pb2, signal_service_pb2, signal_service_pb2_grpc

# Pings keep an idle stream alive through NATs and proxies and notice a dead server within ~40 s.
KEEPALIVE = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
# Codes after which the right move is to reconnect and resume from the last cursor.
RESUMABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
}
MAX_BACKOFF_SECONDS = 30.0
# Events per message: a client resuming far behind catches up a page per message instead of an event.
EVENTS_PER_MESSAGE = 500


def describe(event: resources_pb2.SignalEvent) -> str:
    kind = resources_pb2.SignalEventType.Name(event.type).removeprefix("SIGNAL_EVENT_TYPE_").lower()
    signal = event.signal
    status = resources_pb2.ScreenshotStatus.Name(signal.screenshot_status).removeprefix("SCREENSHOT_STATUS_")
    result = resources_pb2.SignalResult.Name(signal.result).removeprefix("SIGNAL_RESULT_")
    return (
        f"event {event.cursor} {kind}: {signal.signal_id} {signal.ticker} {signal.price} "
        f"screenshot={status.lower()} result={result.lower()} {signal.screenshot_url}".rstrip()
    )


class CursorStore:
    """The last handled cursor, kept in a file when one is given so that a restart resumes too."""

    def __init__(self, path: Path | None, initial: str) -> None:
        self.path = path
        self.value = path.read_text().strip() if path is not None and path.exists() else initial

    def save(self, cursor: str) -> None:
        self.value = cursor
        if self.path is not None:
            temporary = self.path.with_suffix(".tmp")
            temporary.write_text(cursor)
            temporary.replace(self.path)


async def list_signals(
    stub: signal_service_pb2_grpc.SignalServiceStub, auth: tuple, user: str, limit: int
) -> None:
    shown, token = 0, ""
    while shown < limit:
        page = await stub.ListSignals(
            signal_service_pb2.ListSignalsRequest(
                user_id=user, page_size=min(100, limit - shown), page_token=token
            ),
            metadata=auth,
            timeout=10,
        )
        for signal in page.signals:
            print(
                f"signal {signal.signal_id} {signal.created_at.ToJsonString()} {signal.ticker} {signal.price}"
            )
        shown += len(page.signals)
        token = page.next_page_token
        if not token:
            break


async def follow(
    stub: signal_service_pb2_grpc.SignalServiceStub,
    auth: tuple,
    user: str,
    cursor: CursorStore,
    max_events: int | None,
) -> None:
    """Follows the user's events forever (or for max_events), resuming after every disconnect."""
    handled, backoff = 0, 0.5
    while max_events is None or handled < max_events:
        call = stub.SubscribeSignals(
            signal_service_pb2.SubscribeSignalsRequest(
                user_id=user, after_cursor=cursor.value, max_events_per_message=EVENTS_PER_MESSAGE
            ),
            metadata=auth,
        )
        try:
            if not cursor.value:
                # "From now on" becomes a concrete position, so a reconnect misses nothing in between.
                cursor.save(dict(await call.initial_metadata())["x-start-cursor"])
            async for message in call:
                for event in message.events:
                    print(describe(event), flush=True)
                    cursor.save(event.cursor)
                    handled, backoff = handled + 1, 0.5
                    if max_events is not None and handled >= max_events:
                        call.cancel()
                        return
            print("stream ended by the server; resuming", file=sys.stderr, flush=True)
        except grpc.aio.AioRpcError as error:
            if error.code() not in RESUMABLE:
                raise
            print(
                f"stream lost ({error.code().name}: {error.details()}); resuming", file=sys.stderr, flush=True
            )
        await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
        backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)


async def main(arguments: argparse.Namespace) -> int:
    auth = (("authorization", f"Bearer {arguments.key}"),)
    async with grpc.aio.insecure_channel(arguments.addr, options=KEEPALIVE) as channel:
        stub = signal_service_pb2_grpc.SignalServiceStub(channel)
        if arguments.list:
            await list_signals(stub, auth, arguments.user, arguments.list)
        cursor = CursorStore(arguments.cursor_file, arguments.after)
        await follow(stub, auth, arguments.user, cursor, arguments.max_events)
    return 0


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--addr", default=os.environ.get("ALERTS_SIGNAL_ADDR", "127.0.0.1:50051"))
    parser.add_argument(
        "--key", default=os.environ.get("ALERTS_API_KEY", ""), help="API key (or ALERTS_API_KEY)"
    )
    parser.add_argument("--user", required=True, help="the user id to follow")
    parser.add_argument("--list", type=int, default=20, metavar="N", help="list the newest N signals first")
    parser.add_argument(
        "--after", default="", help='start after this cursor ("" = from now, "0" = everything)'
    )
    parser.add_argument("--cursor-file", type=Path, help="where the last cursor is kept across restarts")
    parser.add_argument("--max-events", type=int, help="exit after this many events")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_arguments())))
