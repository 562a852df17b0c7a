"""Parse throughput of signal_service.parsing on one core, over the realistic test corpus.

Run: .venv/bin/python bench/bench_parser.py [--rounds 7] [--messages 20000]

Prints messages/second (median of the rounds, plus min and max) and per-message latency percentiles.
The process is pinned to one CPU where the OS allows it.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

from signal_service.parsing import load_indicator_catalog, parse_alert

sys.path.insert(0, str(Path(__file__).resolve().parent))
from meta import command_line

REPOSITORY = Path(__file__).resolve().parent.parent
CORPUS_PATH = REPOSITORY / "tests/unit/signal_service/parsing/corpus/messages.yaml"


def corpus_messages() -> list[tuple[bytes, str, dict[str, str] | None]]:
    cases = yaml.safe_load(CORPUS_PATH.read_text(encoding="utf-8"))
    return [
        (
            bytes.fromhex(case["body_hex"]) if "body_hex" in case else case["body"].encode(),
            case.get("content_type", "text/plain"),
            case.get("query"),
        )
        for case in cases
    ]


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("--rounds", type=int, default=7)
    arguments.add_argument("--messages", type=int, default=20_000, help="messages parsed per round")
    options = arguments.parse_args()

    pinned = "no"
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        pinned = f"cpu {min(os.sched_getaffinity(0))}"
    catalog = load_indicator_catalog()
    messages = corpus_messages()
    received_at = datetime.now(UTC)
    batch = [messages[index % len(messages)] for index in range(options.messages)]

    def parse(body: bytes, content_type: str, query: dict[str, str] | None) -> None:
        parse_alert(body, content_type=content_type, query=query, received_at=received_at, catalog=catalog)

    for message in messages:
        parse(*message)

    rates = []
    for _ in range(options.rounds):
        started = time.perf_counter()
        for message in batch:
            parse(*message)
        rates.append(len(batch) / (time.perf_counter() - started))

    latencies = []
    for message in batch:
        started = time.perf_counter_ns()
        parse(*message)
        latencies.append((time.perf_counter_ns() - started) / 1_000)
    cuts = statistics.quantiles(latencies, n=100)

    print(f"command: {command_line()}")
    print(f"python {platform.python_version()} on {platform.machine()}, pinned: {pinned}")
    print(f"corpus: {len(messages)} messages, {len(batch)} parses per round, {options.rounds} rounds")
    print(
        f"throughput: median {statistics.median(rates):,.0f} msg/s "
        f"(min {min(rates):,.0f}, max {max(rates):,.0f})"
    )
    print(
        f"latency per message: p50 {cuts[49]:.1f} us, p90 {cuts[89]:.1f} us, p99 {cuts[98]:.1f} us, "
        f"max {max(latencies):.1f} us"
    )


if __name__ == "__main__":
    main()
