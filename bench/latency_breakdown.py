"""Where a webhook's latency builds up: the load generator's view beside the services' own histograms.

Starts the real stack, sends `--rate` webhooks/s for `--seconds` from bench/loadgen.py, then prints the
load generator's latency percentiles next to the edge's webhook latency, the edge's batch sizes, the signal
service's BatchIngestWebhooks latency and group-commit batch sizes, and PostgreSQL statement latency, as
bucket counts from each process's Prometheus metrics. Extra ALERTS_* settings can be given as KEY=VALUE.

    .venv/bin/python bench/latency_breakdown.py --rate 300 --seconds 15
    .venv/bin/python bench/latency_breakdown.py --rate 300 ALERTS_INGEST_BATCH_MAX_INFLIGHT=1
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ingest import BODY, create_users, run_plan
from harness import Stack, unlimited_plans_env
from meta import command_line

from alerts.processes import free_port


def buckets(metrics: str, name: str, labels: str = "") -> str:
    """A histogram's counts per bucket (not cumulative), e.g. "<=0.005:120 <=0.01:30"."""
    counts: list[str] = []
    previous = 0.0
    for line in metrics.splitlines():
        if line.startswith(f"{name}_bucket") and labels in line:
            found = re.search(r'le="([^"]+)"', line)
            cumulative = float(line.rsplit(" ", 1)[1])
            if found and cumulative > previous:
                counts.append(f"<={found.group(1)}:{int(cumulative - previous)}")
            previous = cumulative
    return " ".join(counts)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 (the stack's own http:// address)
        return answer.read().decode()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=300)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("settings", nargs="*", help="ALERTS_*=value for the services")
    options = parser.parse_args()
    metrics_port = free_port()
    extra_env = {**unlimited_plans_env(), "ALERTS_METRICS_PORT": str(metrics_port)}
    extra_env.update(setting.split("=", 1) for setting in options.settings)
    with (
        tempfile.TemporaryDirectory() as tmp,
        Stack(Path(tmp), with_storage=False, extra_env=extra_env) as stack,
    ):
        urls = asyncio.run(create_users(stack, options.users))
        plan = {
            "urls": urls,
            "rate": options.rate,
            "duration": options.seconds,
            "connections": 256,
            "timeout": 10,
            "samples": False,
            "body": BODY.format(run=f"{time.time_ns():x}"),
        }
        result = run_plan("loadgen.py", plan)
        edge = _get(f"{stack.edge_url}/metrics")
        signal = _get(f"http://127.0.0.1:{metrics_port}/metrics")
    print(f"command: {command_line()}")
    print(
        f"load generator: {result['achieved_rate']}/s, answers {result['statuses']}, "
        f"p50 {result['p50_ms']} ms, p90 {result['p90_ms']} ms, p99 {result['p99_ms']} ms, "
        f"max {result['max_ms']} ms"
    )
    print("edge webhook latency (s):", buckets(edge, "alerts_webhook_latency_seconds"))
    print("edge webhooks per call:", buckets(edge, "alerts_webhook_batch_size"))
    print(
        "signal BatchIngestWebhooks latency (s):",
        buckets(signal, "alerts_grpc_server_latency_seconds", 'method="BatchIngestWebhooks"'),
    )
    print("signal webhooks per transaction:", buckets(signal, "alerts_ingest_batch_size"))
    print("signal statement latency (s):", buckets(signal, "alerts_db_query_latency_seconds"))


if __name__ == "__main__":
    main()
