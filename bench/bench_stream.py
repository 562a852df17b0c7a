"""SubscribeSignals through a real signal process on real PostgreSQL and Redis.

1. Latency: `--subscribers` streams, one user each, all open on the signal process; then `--writes`
   sequential UpdateSignalOutcome calls, round-robin over those users, each waiting for its event to
   reach that user's stream before the next. Reported per write:
   - call-to-event: from sending the write to receiving its event (an upper bound on commit-to-subscriber,
     as it includes the write's own round trip), and
   - ack-to-event: from the write's answer (its transaction has committed) to receiving the event (a lower
     bound; negative when the event overtakes the answer).
2. Memory: `--idle` more streams, one user each, opened and left idle; RSS of the signal process before
   and after, divided by the number of streams.

    .venv/bin/python bench/bench_stream.py --subscribers 100 --writes 1000 --idle 1000

Uses PostgreSQL/Redis on 127.0.0.1 when they answer, else the embedded ones; a fresh database each run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import grpc
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Stack, print_json, unlimited_plans_env
from meta import command_line

from apidevs.alerts.v1 import (
    resources_pb2,
    signal_service_pb2,
    signal_service_pb2_grpc,
    user_service_pb2,
    user_service_pb2_grpc,
)
from mesh.grpc import open_channel

STREAMS_PER_CHANNEL = 100


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(statistics.median(values), 3),
        "p90": round(percentile(values, 90), 3),
        "p99": round(percentile(values, 99), 3),
        "max": round(max(values), 3),
    }


class Streams:
    """Open SubscribeSignals calls, spread over several channels (each its own HTTP/2 connection)."""

    def __init__(self, address: str, key: str) -> None:
        self._address = address
        self._key = key
        self._channels: list[grpc.aio.Channel] = []
        self.calls: list[grpc.aio.UnaryStreamCall] = []

    def _stub(self) -> signal_service_pb2_grpc.SignalServiceStub:
        if len(self.calls) % STREAMS_PER_CHANNEL == 0:
            # A distinct channel argument keeps gRPC from sharing one connection between channels.
            channel = grpc.aio.insecure_channel(
                self._address, options=[("grpc.channel_id", len(self._channels))]
            )
            self._channels.append(channel)
        channel = self._channels[-1]
        return signal_service_pb2_grpc.SignalServiceStub(channel)

    async def open(self, user_id: str) -> grpc.aio.UnaryStreamCall:
        call = self._stub().SubscribeSignals(
            signal_service_pb2.SubscribeSignalsRequest(user_id=user_id),
            metadata=(("authorization", f"Bearer {self._key}"),),
        )
        self.calls.append(call)
        await call.initial_metadata()  # accepted: the stream is registered and waiting
        return call

    async def close(self) -> None:
        for call in self.calls:
            call.cancel()
        for channel in self._channels:
            await channel.close()


async def create_users(users: user_service_pb2_grpc.UserServiceStub, count: int) -> list[tuple[str, str]]:
    """(user id, webhook token) for `count` new users, created 50 at a time."""
    created: list[tuple[str, str]] = []
    while len(created) < count:
        batch = await asyncio.gather(
            *(
                users.CreateUser(user_service_pb2.CreateUserRequest(plan=resources_pb2.PLAN_PREMIUM))
                for _ in range(min(50, count - len(created)))
            )
        )
        created += [(answer.user.user_id, answer.webhook_token) for answer in batch]
    return created


async def measure_latency(
    stack: Stack,
    ingest: signal_service_pb2_grpc.SignalServiceStub,
    signals: signal_service_pb2_grpc.SignalServiceStub,
    subscribers: int,
    writes: int,
) -> dict:
    """`ingest` presents the edge's key (webhooks in), `signals` the operator's (outcomes)."""
    async with open_channel(stack.signal_addr, stack.key) as channel:
        people = await create_users(user_service_pb2_grpc.UserServiceStub(channel), subscribers)
    signal_ids = []
    for index, (_, token) in enumerate(people):
        body = f"Ticker: BINANCE:BTCUSDT\nPrice: {index}.5\nid: {uuid.uuid4()}".encode()
        answer = await ingest.IngestWebhook(
            signal_service_pb2.IngestWebhookRequest(webhook_token=token, body=body, content_type="text/plain")
        )
        signal_ids.append(answer.signal_id)
    streams = Streams(stack.signal_addr, stack.key)
    try:
        calls = [await streams.open(user_id) for user_id, _ in people]
        call_to_event: list[float] = []
        ack_to_event: list[float] = []
        for index in range(writes):
            slot = index % subscribers
            started = time.perf_counter()
            await signals.UpdateSignalOutcome(
                signal_service_pb2.UpdateSignalOutcomeRequest(
                    signal_id=signal_ids[slot], result=resources_pb2.SIGNAL_RESULT_WIN, profit_loss=str(index)
                )
            )
            acknowledged = time.perf_counter()
            event = await asyncio.wait_for(calls[slot].read(), 30)
            arrived = time.perf_counter()
            assert event.signal.profit_loss == str(index), "events out of step"
            call_to_event.append((arrived - started) * 1000)
            ack_to_event.append((arrived - acknowledged) * 1000)
    finally:
        await streams.close()
    return {"call_to_event_ms": summary(call_to_event), "ack_to_event_ms": summary(ack_to_event)}


async def measure_idle_memory(stack: Stack, idle: int) -> dict:
    async with open_channel(stack.signal_addr, stack.key) as channel:
        people = await create_users(user_service_pb2_grpc.UserServiceStub(channel), idle)
    signal_process = stack.processes["signal"].process
    assert signal_process is not None
    process = psutil.Process(signal_process.pid)
    await asyncio.sleep(1)
    before = process.memory_info().rss
    streams = Streams(stack.signal_addr, stack.key)
    try:
        opened = time.perf_counter()
        for user_id, _ in people:
            await streams.open(user_id)
        open_seconds = time.perf_counter() - opened
        await asyncio.sleep(2)  # let the streams settle into their idle wait
        after = process.memory_info().rss
        still_open = sum(not call.done() for call in streams.calls)
    finally:
        await streams.close()
    return {
        "idle_streams": idle,
        "still_open": still_open,
        "open_all_seconds": round(open_seconds, 2),
        "signal_rss_before_mib": round(before / 2**20, 1),
        "signal_rss_after_mib": round(after / 2**20, 1),
        "rss_per_idle_stream_kib": round((after - before) / idle / 1024, 1),
    }


async def run(subscribers: int, writes: int, idle: int) -> dict:
    # Every user's stream is opened with the one key the stack has: its stream limit must hold them all.
    extra = unlimited_plans_env() | {
        "ALERTS_DATABASE_POOL_SIZE": "20",
        "ALERTS_STREAM_MAX_PER_KEY": str(subscribers + idle),
    }
    with tempfile.TemporaryDirectory() as tmp, Stack(Path(tmp), with_storage=False, extra_env=extra) as stack:
        async with (
            open_channel(stack.signal_addr, stack.keys.edge) as edge_channel,
            open_channel(stack.signal_addr, stack.key) as channel,
        ):
            ingest = signal_service_pb2_grpc.SignalServiceStub(edge_channel)
            signals = signal_service_pb2_grpc.SignalServiceStub(channel)
            latency = await measure_latency(stack, ingest, signals, subscribers, writes)
        memory = await measure_idle_memory(stack, idle)
    return {
        "command": command_line(),
        "subscribers": f"{subscribers} streams, one user each, on one signal process",
        "writes": writes,
        "latency": latency,
        "memory": memory,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--writes", type=int, default=1000)
    parser.add_argument("--idle", type=int, default=1000)
    arguments = parser.parse_args()
    print_json(asyncio.run(run(arguments.subscribers, arguments.writes, arguments.idle)))


if __name__ == "__main__":
    main()
