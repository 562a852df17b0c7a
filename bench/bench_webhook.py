"""Webhook latency through real processes: N sequential posts to a real edge in front of a real signal
service, against real PostgreSQL and Redis. Prints p50/p90/p99/max and the command.

    .venv/bin/python bench/bench_webhook.py --posts 1000

Uses PostgreSQL/Redis on 127.0.0.1 when they answer, else the embedded ones; a fresh database each run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Stack, unlimited_plans_env

SAMPLE = """🚨 ADX DEF [APIDEVS]
📈 Señal: Divergencia Alcista
🪙 Ticker: BINANCE:BTCUSDT
💰 Precio: $67,890.{i:02d}
⏱️ Timeframe: 15
🕒 Hora: 2026-11-27T14:30:00Z
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def run(posts: int) -> dict:
    with (
        tempfile.TemporaryDirectory() as tmp,
        Stack(Path(tmp), with_storage=False, extra_env=unlimited_plans_env()) as stack,
    ):
        webhook_url = await stack.create_user("premium")
        latencies = []
        async with httpx.AsyncClient(timeout=10) as client:
            for i in range(posts):
                body = SAMPLE.format(i=i % 100) + f"id: {uuid.uuid4()}\n"
                started = time.perf_counter()
                answer = await client.post(
                    webhook_url, content=body.encode(), headers={"content-type": "text/plain"}
                )
                latencies.append((time.perf_counter() - started) * 1000)
                if answer.status_code != 200:
                    raise SystemExit(f"post {i}: {answer.status_code} {answer.text}")
        stored = await stack.count_signals()
    return {
        "posts": posts,
        "stored": stored,
        "p50_ms": round(statistics.median(latencies), 2),
        "p90_ms": round(percentile(latencies, 90), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "max_ms": round(max(latencies), 2),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "command": f"python bench/bench_webhook.py --posts {posts}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--posts", type=int, default=1000)
    options = parser.parse_args()
    print(json.dumps(asyncio.run(run(options.posts)), indent=2))


if __name__ == "__main__":
    main()
