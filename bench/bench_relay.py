"""The outbox relay's CPU per message: PipelinedRedisBroker.enqueue_many against a real Redis.

Sends `--passes` relay passes of `--messages` capture jobs each (the shape the intake writes), in
`--rounds` rounds, into a namespace of its own that is deleted afterwards, and prints this process's CPU
microseconds per message (median, min and max of the rounds) with the load average. CPU time, not wall
time: the machine may be shared. Redis's own work (the dispatch script) is not in the figure.

    .venv/bin/python bench/bench_relay.py --redis-url redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from meta import command_line

from signal_service.outbox.repository import DueMessage
from signal_service.outbox.service import PipelinedRedisBroker


async def measure(options: argparse.Namespace) -> list[float]:
    namespace = f"bench-relay-{uuid.uuid4().hex[:8]}"
    client = Redis.from_url(options.redis_url)
    broker = PipelinedRedisBroker(
        async_client=client, url=options.redis_url, namespace=namespace, middleware=[]
    )
    jobs = [
        DueMessage(
            number,
            "capture-free",
            "capture_screenshot_free",
            [str(uuid.uuid4())],
            {"request_id": os.urandom(16).hex()},
        )
        for number in range(options.messages)
    ]
    try:
        # The first pass asks Redis for its unpack size and loads the script: no part of the steady cost.
        await broker.enqueue_many(jobs)
        rounds = []
        for _ in range(options.rounds):
            started = time.process_time()
            for _ in range(options.passes):
                await broker.enqueue_many(jobs)
            rounds.append((time.process_time() - started) * 1e6 / (options.passes * options.messages))
        return rounds
    finally:
        for key in broker.client.scan_iter(f"{namespace}*"):
            broker.client.delete(key)
        broker.close()
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--messages", type=int, default=100, help="messages per relay pass")
    parser.add_argument("--passes", type=int, default=5, help="passes per round")
    parser.add_argument("--rounds", type=int, default=15)
    options = parser.parse_args()
    rounds = asyncio.run(measure(options))
    print(f"command: {command_line()}")
    print(
        f"CPU per message: median {statistics.median(rounds):.1f} us (min {min(rounds):.1f}, max"
        f" {max(rounds):.1f}) over {options.rounds} rounds of {options.passes} passes of {options.messages};"
        f" load average {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
