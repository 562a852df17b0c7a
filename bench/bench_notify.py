"""Telegram notifications under the candle-close burst and at a steady rate, through real processes.

Run: .venv/bin/python bench/bench_notify.py [--users 1000] [--burst 3000] [--steady-rate 50]
     [--steady-seconds 20] [--workers 2] [--embedded] [--out bench/results/notify.json]

Storage, signal, edge, the Telegram stub (as the Bot API, enforcing Telegram's limits with 429s) and
`--workers` notify workers run as child processes. Every user has Telegram on, text only (no chart wait).

Burst: `--burst` alerts from `--users` users stored within about a second (BatchIngestWebhooks, in rounds
of one alert per user, so each chat's alerts arrive in sequence order). Reports
how many reached the stub, how many 429s the stub answered, whether every chat got its alerts in the
order they arrived, and the drain time (first alert stored to last one delivered). One bot may send 30
messages a second, so the floor is burst / 30 seconds.

Steady: `--steady-rate` alerts a second for `--steady-seconds`, users in turn; reports signal-to-delivery
p50/p99 (stored, by this process's clock, to received by the stub, same machine). Above 30/s the bot's
limit is the bottleneck and the latency grows with the run's length; the report says so.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from google.protobuf import struct_pb2, timestamp_pb2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from apidevs.alerts.v1 import (
    resources_pb2,
    signal_service_pb2,
    signal_service_pb2_grpc,
    user_service_pb2,
    user_service_pb2_grpc,
)
from bench.harness import Stack, print_json, unlimited_plans_env
from mesh.grpc import open_channel

# Telegram allows about 30 a second per bot: the floor. The workers book at one per 35 ms, a little
# under it (notify_service/ratelimit.py), so their own floor is about 5 % higher.
BOT_MESSAGES_PER_SECOND = 30
_PRICE = re.compile(r"💰 (\d+)")
_GUARD_SECONDS = 1800
_STUB_NICENESS = -10


def stub_pid(stack: Stack) -> int:
    process = stack.processes["telegram-stub"].process
    assert process is not None
    return process.pid


def stub_at_telegram_priority(stack: Stack) -> None:
    """The stub stands for Telegram's servers, which this machine's load does not slow: it runs ahead of
    the services under test, so that the time it reads for a request is the request's arrival. Starved
    like the rest (a loaded 2-core machine), it read requests that had queued for a few hundred ms within
    a few ms of each other, and counted them in one second. Needs the right to raise a priority (root);
    without it the stub runs as it is, and the report says so."""
    try:
        os.setpriority(os.PRIO_PROCESS, stub_pid(stack), _STUB_NICENESS)
    except PermissionError:
        print("the Telegram stub runs at normal priority: its 1 s windows are less exact", file=sys.stderr)


def chat_of(user: int) -> str:
    return str(5_000_000 + user)


def body(sequence: int) -> bytes:
    # The price carries the alert's sequence number, so the stub's record shows each chat's order.
    return f"Ticker: BINANCE:BTCUSDT\nPrice: {sequence}\nSignal: buy\nnonce: {uuid.uuid4().hex}".encode()


def request(token: str, sequence: int) -> signal_service_pb2.IngestWebhookRequest:
    received_at = timestamp_pb2.Timestamp()
    received_at.GetCurrentTime()
    return signal_service_pb2.IngestWebhookRequest(
        webhook_token=token, body=body(sequence), content_type="text/plain", received_at=received_at
    )


async def create_users(users: user_service_pb2_grpc.UserServiceStub, count: int) -> list[str]:
    async def one(index: int) -> str:
        document = struct_pb2.Struct()
        document.update({"telegram": {"chat_id": chat_of(index), "with_screenshot": False}})
        created = await users.CreateUser(
            user_service_pb2.CreateUserRequest(
                plan=resources_pb2.PLAN_PREMIUM, notification_preferences=document
            )
        )
        return created.webhook_token

    tokens: list[str] = []
    for start in range(0, count, 50):
        tokens += await asyncio.gather(*(one(index) for index in range(start, min(count, start + 50))))
    return tokens


async def delivered(stub: httpx.AsyncClient, sequences: set[int]) -> list[dict[str, Any]]:
    """The stub's calls once every alert in `sequences` reached it (or the guard ran out)."""
    deadline = time.monotonic() + _GUARD_SECONDS
    while True:
        calls = (await stub.get("/_stub/requests")).json()
        if sequences <= {sequence_of(call) for call in sent_in(calls, sequences)}:
            return calls
        if time.monotonic() > deadline:
            return calls
        await asyncio.sleep(1.0)


def sent_in(calls: list[dict[str, Any]], sequences: set[int]) -> list[dict[str, Any]]:
    """The delivered messages of this run's alerts: a run's alerts carry sequence numbers of their own, so
    that a late message of an earlier run is never counted as this one's."""
    return [
        call
        for call in calls
        if call["method"] == "sendMessage" and call["status"] == 200 and sequence_of(call) in sequences
    ]


def sequence_of(call: dict[str, Any]) -> int:
    found = _PRICE.search(call["params"].get("text", ""))
    return int(found.group(1)) if found else -1


def refusals_by_limit(calls: list[dict[str, Any]]) -> dict[str, int]:
    """The stub's 429s by the limit the send broke: the bot's 30/s, a chat's 1/s, a group's 20/min."""
    counts: dict[str, int] = {}
    for call in calls:
        if call["status"] == 429:
            counts[call.get("limit") or "injected"] = counts.get(call.get("limit") or "injected", 0) + 1
    return counts


def order_report(calls: list[dict[str, Any]], sequences: set[int]) -> dict[str, int]:
    by_chat: dict[str, list[int]] = {}
    for call in sent_in(calls, sequences):
        by_chat.setdefault(str(call["params"]["chat_id"]), []).append(sequence_of(call))
    out_of_order = sum(1 for seqs in by_chat.values() if seqs != sorted(seqs))
    duplicates = sum(len(seqs) - len(set(seqs)) for seqs in by_chat.values())
    return {"chats": len(by_chat), "chats_out_of_order": out_of_order, "duplicates": duplicates}


async def burst(
    stack: Stack, signals: signal_service_pb2_grpc.SignalServiceStub, tokens: list[str], count: int
) -> dict[str, Any]:
    requests = [request(tokens[sequence % len(tokens)], sequence) for sequence in range(count)]
    # One round per alert of a user: a round's alerts are stored concurrently, in no particular order.
    rounds = [requests[start : start + len(tokens)] for start in range(0, count, len(tokens))]
    async with httpx.AsyncClient(base_url=stack.telegram_api_url, timeout=60) as stub:
        await stub.delete("/_stub/requests")
        started = time.time()
        answers = []
        for round_requests in rounds:
            batches = [round_requests[start : start + 500] for start in range(0, len(round_requests), 500)]
            answers += await asyncio.gather(
                *(
                    signals.BatchIngestWebhooks(signal_service_pb2.BatchIngestWebhooksRequest(requests=batch))
                    for batch in batches
                )
            )
        stored_in = time.time() - started
        results = [result for answer in answers for result in answer.results]
        stored = {
            sequence
            for sequence, result in zip(range(count), results, strict=True)
            if result.WhichOneof("result") == "response"
        }
        calls = await delivered(stub, stored)
    sent = sent_in(calls, stored)
    last = max((call["received_at"] for call in sent), default=started)
    return {
        "alerts": count,
        "users": len(tokens),
        "stored_in_seconds": round(stored_in, 2),
        "refused_at_ingest": count - len(stored),
        "delivered": len({sequence_of(call) for call in sent}),
        "answered_429": sum(1 for call in calls if call["status"] == 429),
        "answered_429_by_limit": refusals_by_limit(calls),
        **order_report(calls, stored),
        "drain_seconds": round(last - started, 1),
        "floor_seconds": round(count / BOT_MESSAGES_PER_SECOND, 1),
    }


async def steady(
    stack: Stack,
    signals: signal_service_pb2_grpc.SignalServiceStub,
    tokens: list[str],
    rate: float,
    seconds: float,
    first: int,
) -> dict[str, Any]:
    """`first`: this run's first sequence number, after every earlier run's (see sent_in)."""
    total = int(rate * seconds)
    sent_at: dict[int, float] = {}
    async with httpx.AsyncClient(base_url=stack.telegram_api_url, timeout=60) as stub:
        await stub.delete("/_stub/requests")
        started = time.monotonic()
        pending = []
        for index in range(total):
            await asyncio.sleep(max(0.0, started + index / rate - time.monotonic()))
            sent_at[first + index] = time.time()
            pending.append(
                asyncio.ensure_future(
                    signals.IngestWebhook(request(tokens[index % len(tokens)], first + index))
                )
            )
        await asyncio.gather(*pending)
        offered_for = time.monotonic() - started
        calls = await delivered(stub, set(sent_at))
    first_received: dict[int, float] = {}
    for call in sent_in(calls, set(sent_at)):
        sequence = sequence_of(call)
        first_received[sequence] = min(call["received_at"], first_received.get(sequence, call["received_at"]))
    latencies = sorted(first_received[sequence] - sent_at[sequence] for sequence in first_received)
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else [0.0] * 99
    return {
        "rate_per_second": rate,
        "offered_alerts": total,
        "offered_for_seconds": round(offered_for, 1),
        "delivered": len(latencies),
        "answered_429": sum(1 for call in calls if call["status"] == 429),
        "signal_to_delivery_p50_seconds": round(quantiles[49], 2),
        "signal_to_delivery_p99_seconds": round(quantiles[98], 2),
        "signal_to_delivery_max_seconds": round(latencies[-1], 2) if latencies else 0.0,
        "above_bot_limit": rate > BOT_MESSAGES_PER_SECOND,
        **order_report(calls, set(sent_at)),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--burst", type=int, default=3000)
    parser.add_argument("--steady-rate", type=float, action="append", default=None)
    parser.add_argument("--steady-seconds", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=48)
    parser.add_argument("--out", type=Path, default=None)
    # A PostgreSQL and Redis of the run's own, rather than the machine's (which other work may crowd).
    parser.add_argument("--embedded", action="store_true")
    options = parser.parse_args()
    rates = options.steady_rate or [50.0]
    env = unlimited_plans_env() | {"ALERTS_NOTIFY_CONCURRENCY": str(options.concurrency)}
    with (
        tempfile.TemporaryDirectory(prefix="bench-notify-") as workdir,
        Stack(
            Path(workdir), notify_workers=options.workers, extra_env=env, embedded=options.embedded
        ) as stack,
    ):
        stub_at_telegram_priority(stack)
        # Webhooks come in with the edge's key (only the edge may ingest), users are made with the operator's.
        async with (
            open_channel(stack.signal_addr, stack.key) as channel,
            open_channel(stack.signal_addr, stack.keys.edge) as edge_channel,
        ):
            users = user_service_pb2_grpc.UserServiceStub(channel)
            signals = signal_service_pb2_grpc.SignalServiceStub(edge_channel)
            tokens = await create_users(users, options.users)
            result: dict[str, Any] = {
                "load_average_at_start": [round(load, 2) for load in os.getloadavg()],
                "stub_niceness": os.getpriority(os.PRIO_PROCESS, stub_pid(stack)),
                "workers": options.workers,
                "concurrency_per_worker": options.concurrency,
                "burst": await burst(stack, signals, tokens, options.burst),
            }
            print(json.dumps({"burst": result["burst"]}), file=sys.stderr)
            result["steady"] = []
            first = options.burst
            for rate in rates:
                run = await steady(stack, signals, tokens, rate, options.steady_seconds, first)
                result["steady"].append(run)
                first += int(rate * options.steady_seconds)
            result["load_average_at_end"] = [round(load, 2) for load in os.getloadavg()]
    print_json(result)
    if options.out is not None:
        options.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
