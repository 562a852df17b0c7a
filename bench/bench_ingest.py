"""Webhook ingest under open-loop load through real processes, and the same loads against the floors.

Starts the real edge and signal service (PostgreSQL, Redis), creates `--users` users, and drives the edge
from bench/loadgen.py in its own process:
  burst     3,000 webhooks from 1,000 users scheduled evenly within 1 s (the candle close), then counts rows
  steady    300 webhooks/s for 60 s
  capacity  rising open-loop rates, `--step-seconds` each, up to the first whose p99 reaches 100 ms
The same loads then run against the floors: a bare Litestar route under the edge's uvicorn options
(bench/floor_app.py), and autocommitted asyncpg inserts of the same row (bench/floor_pg.py). Latency
counts from each request's scheduled send time. Writes one result JSON (and the per-request samples).

    .venv/bin/python bench/bench_ingest.py --out bench/results/ingest.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Stack, unlimited_plans_env
from meta import load_average, record

from alerts.processes import ManagedProcess, free_port, http_ok
from apidevs.alerts.v1 import resources_pb2, user_service_pb2, user_service_pb2_grpc
from mesh.grpc import open_channel

BENCH = Path(__file__).resolve().parent
BODY = (
    "🚨 ADX DEF [APIDEVS]\n📈 Señal: Divergencia Alcista\n🪙 Ticker: BINANCE:BTCUSDT\n"
    "💰 Precio: $67,890.50\n⏱️ Timeframe: 15\n🕒 Hora: 2026-11-27T14:30:00Z\nid: {run}-{{n}}\n"
)
P99_LIMIT_MS = 100.0
CAPACITY_RATES = (250, 500, 750, 1000, 1250, 1500, 2000, 2500, 3000, 4000)


def run_plan(script: str, plan: dict[str, Any], cpus: frozenset[int] | None = None) -> dict[str, Any]:
    """Runs loadgen.py or floor_pg.py in its own process (on `cpus` when given) and returns what it
    printed."""
    done = subprocess.run(
        [sys.executable, str(BENCH / script)],
        input=json.dumps(plan),
        capture_output=True,
        text=True,
        check=False,
        cwd=BENCH,
        preexec_fn=None if cpus is None else lambda: os.sched_setaffinity(0, cpus),
    )
    if done.returncode != 0:
        raise RuntimeError(f"{script} failed: {done.stderr[-3000:]}")
    return json.loads(done.stdout)


class CpuMeter:
    """CPU seconds spent by named process trees and by this database's PostgreSQL backends."""

    def __init__(self, roots: dict[str, int], dsn: str | None) -> None:
        self.roots = roots
        self.dsn = dsn
        self._start: dict[str, float] = {}

    @staticmethod
    def _tree_seconds(pid: int) -> float:
        total = 0.0
        try:
            root = psutil.Process(pid)
            for process in [root, *root.children(recursive=True)]:
                times = process.cpu_times()
                total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
        return total

    def _backend_seconds(self) -> dict[int, float]:
        if not self.dsn:
            return {}

        async def pids() -> list[int]:
            connection = await asyncpg.connect(self.dsn)
            try:
                rows = await connection.fetch(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid()"
                )
            finally:
                await connection.close()
            return [row["pid"] for row in rows]

        seconds = {}
        for pid in asyncio.run(pids()):
            try:
                times = psutil.Process(pid).cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            seconds[pid] = times.user + times.system
        return seconds

    def __enter__(self) -> CpuMeter:
        self._start = {name: self._tree_seconds(pid) for name, pid in self.roots.items()}
        self._backends = self._backend_seconds()
        self._wall = time.perf_counter()
        self._machine = psutil.cpu_times()
        return self

    def __exit__(self, *exc: object) -> None:
        self.used = {
            name: round(self._tree_seconds(pid) - self._start[name], 3) for name, pid in self.roots.items()
        }
        if self.dsn:
            backends = self._backend_seconds()
            self.used["postgres_backends"] = round(
                sum(value - self._backends.get(pid, 0.0) for pid, value in backends.items()), 3
            )
        machine = psutil.cpu_times()
        busy = sum(getattr(machine, f) - getattr(self._machine, f) for f in ("user", "system", "nice"))
        self.used["machine_busy"] = round(busy, 3)
        self.used["wall"] = round(time.perf_counter() - self._wall, 3)


def measured(run: Callable[[], dict[str, Any]], meter: CpuMeter) -> dict[str, Any]:
    load_before = load_average()
    with meter:
        result = run()
    result["cpu_seconds"] = {**meter.used, "loadgen": result.get("loadgen_cpu_s")}
    requests = max(result["requests"], 1)
    result["cpu_ms_per_request"] = {
        name: round(seconds * 1000 / requests, 3)
        for name, seconds in result["cpu_seconds"].items()
        if seconds is not None and name != "wall"
    }
    result["load_average_before"] = load_before
    return result


def capacity_search(step: Callable[[int], dict[str, Any]], rates: tuple[int, ...]) -> dict[str, Any]:
    """Rates in rising order until the first whose p99 reaches the limit or that loses a request."""
    steps = []
    best = 0
    for rate in rates:
        result = step(rate)
        result.pop("samples", None)
        passed = result["errors"] == 0 and result["p99_ms"] < P99_LIMIT_MS
        result["passed"] = passed
        steps.append(result)
        if not passed:
            break
        best = rate
        time.sleep(1.0)
    return {"p99_limit_ms": P99_LIMIT_MS, "capacity_rate": best, "steps": steps}


class Scenarios:
    def __init__(self, options: argparse.Namespace, urls: list[str], meter: CpuMeter, script: str) -> None:
        self.options = options
        self.urls = urls
        self.meter = meter
        self.script = script
        self.extra: dict[str, Any] = {}
        self.run_tag = ""

    def plan(self, rate: float, duration: float, connections: int, samples: bool) -> dict[str, Any]:
        self.run_tag = f"{time.time_ns():x}"
        return {
            "urls": self.urls,
            "rate": rate,
            "duration": duration,
            "connections": connections,
            "timeout": 10,
            "samples": samples,
            "body": BODY.format(run=self.run_tag),
            **self.extra,
        }

    def burst(self) -> dict[str, Any]:
        options = self.options
        plan = self.plan(options.burst, 1.0, options.burst_connections, True)
        return measured(lambda: run_plan(self.script, plan), self.meter)

    def steady(self, seconds: float) -> dict[str, Any]:
        plan = self.plan(self.options.steady_rate, seconds, self.options.connections, True)
        return measured(lambda: run_plan(self.script, plan), self.meter)

    def capacity(self) -> dict[str, Any]:
        def step(rate: int) -> dict[str, Any]:
            plan = self.plan(rate, self.options.step_seconds, self.options.connections, False)
            return measured(lambda: run_plan(self.script, plan), self.meter)

        return capacity_search(step, CAPACITY_RATES)


async def create_users(stack: Stack, count: int) -> list[str]:
    limit = asyncio.Semaphore(32)
    async with open_channel(stack.signal_addr, stack.key) as channel:
        stub = user_service_pb2_grpc.UserServiceStub(channel)

        async def one() -> str:
            async with limit:
                created = await stub.CreateUser(
                    user_service_pb2.CreateUserRequest(
                        plan=resources_pb2.PLAN_PREMIUM, default_chart_id="bench"
                    )
                )
            return created.webhook_url

        return list(await asyncio.gather(*(one() for _ in range(count))))


async def any_user_id(dsn: str) -> str:
    connection = await asyncpg.connect(dsn)
    try:
        return str(await connection.fetchval("SELECT id FROM users LIMIT 1"))
    finally:
        await connection.close()


def wait_for_rows(stack: Stack, before: int, answered: int, patience: float = 30.0) -> int:
    """Rows stored since `before`, once the answered ones are all in or `patience` has passed: a 202 is
    kept in the edge's spool and stored when replayed, a moment after its answer."""
    deadline = time.monotonic() + patience
    while True:
        stored = stack.count_sync() - before
        if stored >= answered or time.monotonic() > deadline:
            return stored
        time.sleep(0.5)


def reconcile(dsn: str, run_tag: str, requests: list[list[Any]]) -> dict[str, Any]:
    """Matches answers with stored rows by the request number in each body: a 2xx whose row is missing
    is lost; a row whose request got no 2xx (the client gave up first) was stored all the same."""

    async def stored_numbers() -> set[int]:
        connection = await asyncpg.connect(dsn)
        try:
            rows = await connection.fetch(
                "SELECT convert_from(raw_body, 'UTF8') AS body FROM signals"
                " WHERE position(convert_to($1, 'UTF8') in raw_body) > 0",
                f"id: {run_tag}-",
            )
        finally:
            await connection.close()
        marker = re.compile(rf"id: {run_tag}-(\d+)")
        return {int(found.group(1)) for row in rows if (found := marker.search(row["body"]))}

    stored = asyncio.run(stored_numbers())
    answered = {n for n, (_, _, status) in enumerate(requests) if status.startswith("2")}
    return {
        "rows_stored": len(stored),
        "lost": len(answered - stored),
        "stored_without_2xx": len(stored - answered),
    }


@contextmanager
def bare_route(stack: Stack, workdir: Path) -> Iterator[tuple[str, int]]:
    """bench/floor_app.py (a bare Litestar route under the edge's server options) on a port of its own,
    for as long as the block runs: its base URL and its process id."""
    port = free_port()
    floor = ManagedProcess(
        "floor-http",
        [sys.executable, str(BENCH / "floor_app.py")],
        {**stack.env, "ALERTS_EDGE_PORT": str(port)},
        ready=lambda: http_ok(f"http://127.0.0.1:{port}/health/live"),
        log_path=workdir / "logs" / "floor-http.log",
    )
    floor.start()
    try:
        floor.wait_ready(30)
        assert floor.process is not None
        yield f"http://127.0.0.1:{port}", floor.process.pid
    finally:
        floor.stop()


def strip_samples(result: dict[str, Any], samples: dict[str, Any], name: str) -> dict[str, Any]:
    """Moves the per-request samples out of the result; a long run keeps every k-th, enough to plot."""
    if "samples" in result:
        kept = result.pop("samples")
        samples[name] = kept if name.endswith("_burst") else kept[:: max(1, len(kept) // 4000)]
    return result


def run(options: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    settings = {
        "users": options.users,
        "burst": options.burst,
        "burst_connections": options.burst_connections,
        "steady_rate": options.steady_rate,
        "steady_seconds": options.steady_seconds,
        "floor_steady_seconds": options.floor_steady_seconds,
        "step_seconds": options.step_seconds,
        "connections": options.connections,
        "capacity_rates": CAPACITY_RATES,
        "edge_workers": options.edge_workers,
        "signal_processes": 1,
        "plan_limits": "unlimited (bench/harness.py unlimited_plans_env)",
    }
    result: dict[str, Any] = {**record(settings)}
    samples: dict[str, Any] = {}
    extra_env = unlimited_plans_env()
    with (
        tempfile.TemporaryDirectory() as tmp,
        Stack(Path(tmp), with_storage=False, edge_workers=options.edge_workers, extra_env=extra_env) as stack,
    ):
        result["settings"]["database_pool_size"] = int(stack.env.get("ALERTS_DATABASE_POOL_SIZE", "10"))
        urls = asyncio.run(create_users(stack, options.users))
        roots = {name: process.process.pid for name, process in stack.processes.items() if process.process}
        meter = CpuMeter(roots, stack.dsn)
        ours = Scenarios(options, urls, meter, "loadgen.py")
        before = stack.count_sync()
        burst = strip_samples(ours.burst(), samples, "ingest_burst")
        wait_for_rows(stack, before, burst["ok"])
        burst.update(reconcile(stack.dsn, ours.run_tag, samples["ingest_burst"]))
        ingest = {"burst": burst}
        time.sleep(2)
        ingest["steady"] = strip_samples(ours.steady(options.steady_seconds), samples, "ingest_steady")
        time.sleep(2)
        ingest["capacity"] = ours.capacity()
        result["ingest"] = ingest

        with bare_route(stack, Path(tmp)) as (floor_url, floor_pid):
            bare = Scenarios(
                options,
                [url.replace(stack.edge_url, floor_url) for url in urls],
                CpuMeter({"floor_http": floor_pid}, None),
                "loadgen.py",
            )
            result["floor_http"] = {
                "burst": strip_samples(bare.burst(), samples, "floor_http_burst"),
                "steady": strip_samples(
                    bare.steady(options.floor_steady_seconds), samples, "floor_http_steady"
                ),
                "capacity": bare.capacity(),
            }

        database = Scenarios(options, urls, CpuMeter({}, stack.dsn), "floor_pg.py")
        database.extra = {
            "dsn": stack.dsn,
            "user_id": asyncio.run(any_user_id(stack.dsn)),
            "connections": result["settings"]["database_pool_size"],
        }
        result["floor_pg"] = {
            "sequential": run_plan("floor_pg.py", {**database.extra, "sequential": True, "count": 1000}),
            "burst": strip_samples(database.burst(), samples, "floor_pg_burst"),
            "steady": strip_samples(
                database.steady(options.floor_steady_seconds), samples, "floor_pg_steady"
            ),
            "capacity": database.capacity(),
        }
    result["load_average_at_end"] = load_average()
    result["ratios"] = ratios(result)
    return result, samples


def ratios(result: dict[str, Any]) -> dict[str, Any]:
    """Our figures divided by each floor's: latencies (how many times slower) and capacity (what share)."""
    out: dict[str, Any] = {}
    ours = result["ingest"]
    for floor in ("floor_http", "floor_pg"):
        theirs = result[floor]
        out[floor] = {
            f"{scenario}_{q}": round(ours[scenario][q] / theirs[scenario][q], 2)
            for scenario in ("burst", "steady")
            for q in ("p50_ms", "p99_ms")
            if theirs[scenario][q]
        }
        if theirs["capacity"]["capacity_rate"]:
            out[floor]["capacity"] = round(
                ours["capacity"]["capacity_rate"] / theirs["capacity"]["capacity_rate"], 3
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "ingest.json")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--burst", type=int, default=3000)
    parser.add_argument("--burst-connections", type=int, default=1000)
    parser.add_argument("--steady-rate", type=float, default=300)
    parser.add_argument("--steady-seconds", type=float, default=60)
    parser.add_argument("--floor-steady-seconds", type=float, default=15)
    parser.add_argument("--step-seconds", type=float, default=4)
    parser.add_argument("--connections", type=int, default=256)
    parser.add_argument("--edge-workers", type=int, default=int(os.environ.get("ALERTS_EDGE_WORKERS", "1")))
    options = parser.parse_args()
    result, samples = run(options)
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(result, indent=2) + "\n")
    options.out.with_name(options.out.stem + "_samples.json").write_text(json.dumps(samples))
    summary = {
        part: {
            name: {k: v for k, v in figures.items() if k.endswith("_ms") or k in ("errors", "capacity_rate")}
            for name, figures in result[part].items()
        }
        for part in ("ingest", "floor_http", "floor_pg")
    }
    print(json.dumps({"summary": summary, "ratios": result["ratios"], "out": str(options.out)}, indent=2))


if __name__ == "__main__":
    main()
