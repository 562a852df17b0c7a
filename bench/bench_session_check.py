"""What one TradingView session check costs: requests and time per user, against the chart stub's home page.

Run: .venv/bin/python bench/bench_session_check.py [--users 500] [--concurrency 20]

Each check is capture_service.session_probe.probe_session, exactly what the capture workers' session check
actor runs (one GET of the home page with the user's cookies, redirects within the site followed). Half the
users hold valid sessions, half expired ones. Prints requests per check, per-check latency percentiles and
checks/second, sequentially and at the given concurrency. Against the real site, add TradingView's own
response time (a few hundred ms) to each check; the request count stays one.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import httpx

from capture_service.capture import TradingViewSession
from capture_service.chart_stub import create_chart_stub_app
from capture_service.session_probe import probe_session

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support import asgi_app_in_thread


def sessions(count: int) -> list[TradingViewSession]:
    return [
        TradingViewSession(sessionid=f"{'expired-' if index % 2 else ''}user-{index}", sessionid_sign="sig")
        for index in range(count)
    ]


async def run(base_url: str, users: list[TradingViewSession], concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    requests = 0
    verdicts: dict[str, int] = {}
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=10) as client:

        async def check(session: TradingViewSession) -> None:
            nonlocal requests
            async with gate:
                started = time.perf_counter()
                probe = await probe_session(client, base_url, session)
                latencies.append(time.perf_counter() - started)
                requests += probe.requests
                verdicts[probe.verdict] = verdicts.get(probe.verdict, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(check(session) for session in users))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "checks": len(users),
        "requests_per_check": requests / len(users),
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "checks_per_second": len(users) / elapsed,
        "valid": verdicts.get("valid", 0),
        "invalid": verdicts.get("invalid", 0),
        "unknown": verdicts.get("unknown", 0),
    }


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("--users", type=int, default=500)
    arguments.add_argument("--concurrency", type=int, default=20)
    options = arguments.parse_args()
    users = sessions(options.users)
    with asgi_app_in_thread(create_chart_stub_app()) as base_url:
        for concurrency in (1, options.concurrency):
            figures = asyncio.run(run(base_url, users, concurrency))
            print(
                f"concurrency {concurrency:>3}: {figures['checks']} checks, "
                f"{figures['requests_per_check']:.2f} requests/check, p50 {figures['p50_ms']:.1f} ms, "
                f"p99 {figures['p99_ms']:.1f} ms, {figures['checks_per_second']:.0f} checks/s "
                f"(valid {figures['valid']}, invalid {figures['invalid']}, unknown {figures['unknown']})"
            )


if __name__ == "__main__":
    main()
