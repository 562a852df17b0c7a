"""The peers' set-up: the load generator on one core, everything of ours on the other, a new connection
per request.

Issue 11 quotes where the best peers stand, measured on this kind of machine that way:
fabston/TradingView-Webhook-Bot (waitress, no persistence) answered the 3,000 burst with p99 190 ms and
about 2,600 webhooks/s closed loop; robswc/tradingview-webhooks-bot (gunicorn, one sync worker) about
700/s, missing the 3 s deadline for up to 40 % of the burst; a bare Starlette route under uvicorn about
4,000/s. This benchmark pins itself to the server core before it starts an embedded PostgreSQL and Redis,
the signal service and the edge (each inherits the core), and runs the load generator on the other core
with `Connection: close` on every request. Scenarios: the burst (3,000 webhooks from 1,000 users within
1 s, open loop; every 2xx matched to its stored row) and a closed loop (`--clients` clients back to back
for `--seconds`), against our stack and against the bare Litestar route of bench/floor_app.py.

    .venv/bin/python bench/bench_pinned.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import psutil
from bench_ingest import (
    BODY,
    CpuMeter,
    bare_route,
    create_users,
    measured,
    reconcile,
    run_plan,
    wait_for_rows,
)
from harness import Stack, unlimited_plans_env

LOADGEN_CPUS = frozenset({0})
SERVER_CPUS = frozenset({1})
DEADLINE_MS = 3000.0


def burst_plan(urls: list[str], count: int, tag: str) -> dict[str, Any]:
    return {
        "urls": urls,
        "rate": count,
        "duration": 1.0,
        "connections": 1000,
        "timeout": 10,
        "samples": True,
        "close": True,
        "body": BODY.format(run=tag),
    }


def closed_plan(urls: list[str], clients: int, seconds: float, tag: str) -> dict[str, Any]:
    return {
        "urls": urls,
        "clients": clients,
        "duration": seconds,
        "timeout": 10,
        "close": True,
        "body": BODY.format(run=tag),
    }


def burst_line(name: str, result: dict[str, Any], samples: list[list[Any]]) -> str:
    within = sum(1 for _, latency, status in samples if status.startswith("2") and latency <= DEADLINE_MS)
    return (
        f"{name:<24} {result['requests']:,} sent, {within:,} answered 2xx within 3 s, statuses"
        f" {result['statuses']}, p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms,"
        f" slowest {result['max_ms']:.1f} ms"
    )


def closed_line(name: str, result: dict[str, Any], clients: int) -> str:
    return (
        f"{name:<24} {result['achieved_rate']:,.0f} webhooks/s with {clients} clients over"
        f" {result['wall_s']:.1f} s, statuses {result['statuses']}, p50 {result['p50_ms']:.1f} ms,"
        f" p99 {result['p99_ms']:.1f} ms, {result['connections_opened']:,} connections opened\n"
        f"{'':<24} CPU ms per webhook: {result['cpu_ms_per_request']}"
    )


def server_meter(stack: Stack) -> CpuMeter:
    """CPU time of the services, the database's backends and the embedded Redis (which daemonizes, so it
    is found by the socket on its command line rather than among this process's children)."""
    roots = {name: process.process.pid for name, process in stack.processes.items() if process.process}
    socket_path = stack.env["ALERTS_REDIS_URL"].removeprefix("unix://")
    for process in psutil.process_iter(["cmdline"]):
        if any(socket_path in argument for argument in process.info["cmdline"] or ()):
            roots["redis"] = process.pid
    return CpuMeter(roots, stack.dsn)


def run(options: argparse.Namespace) -> list[str]:
    os.sched_setaffinity(0, SERVER_CPUS)
    lines = [
        f"load generator on CPU {sorted(LOADGEN_CPUS)}; edge, signal service, PostgreSQL (embedded) and"
        f" Redis (embedded) on CPU {sorted(SERVER_CPUS)}; every request on a new connection",
    ]
    with (
        tempfile.TemporaryDirectory() as tmp,
        Stack(Path(tmp), with_storage=False, extra_env=unlimited_plans_env(), embedded=True) as stack,
    ):
        urls = asyncio.run(create_users(stack, options.users))
        lines.append(f"{options.users:,} users, unlimited plans; load average {os.getloadavg()[0]:.2f}")
        tag = f"{time.time_ns():x}"
        before = stack.count_sync()
        burst = run_plan("loadgen.py", burst_plan(urls, options.burst, tag), LOADGEN_CPUS)
        samples = burst.pop("samples")
        wait_for_rows(stack, before, burst["ok"])
        stored = reconcile(stack.dsn, tag, samples)
        lines.append(burst_line("burst, ours", burst, samples))
        lines.append(
            f"{'':<24} {stored['rows_stored']:,} rows stored, {stored['lost']} answered 2xx but not"
            f" stored, {stored['stored_without_2xx']} stored after the client gave up"
        )
        time.sleep(2)
        plan = closed_plan(urls, options.clients, options.seconds, f"{time.time_ns():x}")
        closed = measured(lambda: run_plan("loadgen.py", plan, LOADGEN_CPUS), server_meter(stack))
        lines.append(closed_line("closed loop, ours", closed, options.clients))

        with bare_route(stack, Path(tmp)) as (floor_url, floor_pid):
            bare = [url.replace(stack.edge_url, floor_url) for url in urls]
            floor_burst = run_plan("loadgen.py", burst_plan(bare, options.burst, "floor"), LOADGEN_CPUS)
            lines.append(burst_line("burst, bare route", floor_burst, floor_burst.pop("samples")))
            floor_plan = closed_plan(bare, options.clients, options.seconds, "floor")
            floor_closed = measured(
                lambda: run_plan("loadgen.py", floor_plan, LOADGEN_CPUS),
                CpuMeter({"floor_http": floor_pid}, None),
            )
            lines.append(closed_line("closed loop, bare route", floor_closed, options.clients))
    lines += [
        "peers, as issue 11 quotes them (same pinning, a new connection per request):",
        "  fabston/TradingView-Webhook-Bot (waitress, no persistence): burst p99 190 ms, ~2,600/s closed",
        "  robswc/tradingview-webhooks-bot (gunicorn, 1 sync worker): ~700/s; up to 40 % of the burst late",
        "  bare Starlette route under uvicorn: ~4,000/s (load-generator bound)",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--burst", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    options = parser.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("needs two CPUs: one for the load generator, one for the server")
    print("\n".join(run(options)))


if __name__ == "__main__":
    main()
