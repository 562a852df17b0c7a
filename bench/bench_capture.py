"""Capture throughput and memory of one browser pool, and how long a premium capture waits behind a
backlog of free ones, against the local chart stub.

Pool: runs the chart stub as a child process, then captures charts through one BrowserPool with a fixed
number of captures in flight (the worker's default concurrency, 3), and prints captures per minute,
latency percentiles, and the peak memory of this process plus its Chromium and Playwright children, from
before Chromium's launch to the last capture, with each process's share of it by role. RSS is summed over
processes and so counts shared pages more than once; PSS splits them and is the better total.

Premium wait: the whole system as processes (bench/harness.py: storage, signal, edge and one capture
worker at that concurrency, pointed at the stub with ALERTS_TRADINGVIEW_URL), a free user's webhooks
through the edge until `--free-jobs` captures are queued, then premium webhooks one at a time while that
backlog is still there. Each premium capture's wait is counted from the edge's receipt of its webhook
(signals.created_at) to its claim by the worker (screenshots.claimed_at), both stamped by the system.

    .venv/bin/python bench/bench_capture.py --captures 60 --concurrency 3
    .venv/bin/python bench/bench_capture.py --parts premium-wait --free-jobs 500 --premium-samples 10
    .venv/bin/python bench/bench_capture.py --parts pool premium-wait     # all three figures
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import dataclasses
import json
import os
import random
import re
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import numpy as np
import psutil
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Stack, unlimited_plans_env

from apidevs.alerts.v1 import (
    resources_pb2,
    signal_service_pb2,
    signal_service_pb2_grpc,
    user_service_pb2,
    user_service_pb2_grpc,
)
from capture_service.browser import BrowserPool
from capture_service.capture import TradingViewSession, capture_chart, chart_url
from mesh.grpc import open_channel
from mesh.queues import capture_queue, capture_workers_key, dramatiq_namespace
from mesh.settings import CommonSettings

TICKERS = ("BINANCE:BTCUSDT", "NASDAQ:AAPL", "FX:EURUSD", "NYSE:BRK.B", "BINANCE:ETHUSDT")


@dataclass
class MemoryPeak:
    rss_bytes: int = 0
    pss_bytes: int = 0
    footprint_bytes: int = 0
    processes: int = 0
    # PSS by role (see process_role) at the moment the total PSS peaked, and the process count of each.
    pss_by_role: dict[str, int] = field(default_factory=dict)
    processes_by_role: dict[str, int] = field(default_factory=dict)


_PR_SET_CHILD_SUBREAPER = 36


def adopt_orphaned_descendants() -> None:
    """Makes this process the subreaper of its descendants (Linux).

    Chromium double-forks its crash handler, which would otherwise be re-parented to init and fall out of
    the process tree that is measured.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def process_role(process: psutil.Process, root_pid: int) -> str:
    """What a process of the tree is for: Chromium's by its --type (and utility sub-type)."""
    if process.pid == root_pid:
        return "python"
    arguments = process.cmdline()
    if not arguments:
        return process.name()
    if Path(arguments[0]).name == "node":
        return "playwright driver"
    options = dict(argument.split("=", 1) for argument in arguments[1:] if "=" in argument)
    kind = options.get("--type")
    if kind is None:
        return "crashpad" if "crashpad" in arguments[0] else "browser"
    if kind == "utility":
        return "utility " + options.get("--utility-sub-type", "?").split(".")[0]
    if kind == "renderer" and "--top-chrome-webui" in arguments:
        return "renderer (browser UI)"
    return kind


_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
_PAGEMAP_PRESENT = np.uint64(1 << 63)
_PAGEMAP_PFN = np.uint64((1 << 55) - 1)
_SMAPS_RANGE = re.compile(rb"^([0-9a-f]+)-([0-9a-f]+) ")


@dataclass
class ProcessMemory:
    rss_bytes: int
    pss_bytes: int
    # Physical page numbers of every resident page, to count pages shared within the tree once.
    frames: np.ndarray


def process_memory(pid: int) -> ProcessMemory:
    """RSS and PSS from /proc/PID/smaps, and the frames behind the resident mappings from pagemap (root
    only: without CAP_SYS_ADMIN the kernel reports every frame as 0)."""
    rss = pss = 0
    resident: list[tuple[int, int]] = []
    start = end = 0
    with open(f"/proc/{pid}/smaps", "rb") as smaps:
        for line in smaps:
            found = _SMAPS_RANGE.match(line)
            if found:
                start, end = int(found[1], 16), int(found[2], 16)
            elif line.startswith(b"Rss:"):
                kib = int(line.split()[1])
                rss += kib * 1024
                if kib:
                    resident.append((start, end))
            elif line.startswith(b"Pss:"):
                pss += int(line.split()[1]) * 1024
    frames = []
    with open(f"/proc/{pid}/pagemap", "rb", buffering=0) as pagemap:
        for start, end in resident:
            pagemap.seek(start // _PAGE_BYTES * 8)
            entries = np.frombuffer(pagemap.read((end - start) // _PAGE_BYTES * 8), dtype=np.uint64)
            frames.append(entries[(entries & _PAGEMAP_PRESENT) != 0] & _PAGEMAP_PFN)
    return ProcessMemory(rss, pss, np.concatenate(frames) if frames else np.empty(0, np.uint64))


@dataclass
class TreeMemory:
    rss_bytes: int
    pss_bytes: int
    footprint_bytes: int
    pss_by_role: dict[str, list[int]]


def process_tree_memory(root_pid: int, excluded_pids: set[int]) -> TreeMemory:
    """`root_pid` and its descendants, less `excluded_pids`: summed RSS and PSS, PSS of each process by role,
    and the footprint, every physical page mapped by any of them counted once.

    PSS splits a shared page among every process mapping it, including unrelated ones: another Chromium
    or Playwright driver on the machine lowers ours. The footprint does not depend on what else runs; it
    is what the tree needs on a machine (or in a container) of its own.
    """
    rss = pss = 0
    by_role: dict[str, list[int]] = {}
    frames = []
    root = psutil.Process(root_pid)
    for process in [root, *root.children(recursive=True)]:
        if process.pid in excluded_pids:
            continue
        with contextlib.suppress(
            psutil.NoSuchProcess, psutil.AccessDenied, FileNotFoundError, ProcessLookupError
        ):
            memory = process_memory(process.pid)
            role = process_role(process, root_pid)
            rss += memory.rss_bytes
            pss += memory.pss_bytes
            frames.append(memory.frames)
            by_role.setdefault(role, []).append(memory.pss_bytes)
    unique = np.unique(np.concatenate(frames)) if frames else np.empty(0, np.uint64)
    if unique.size and not unique.any():
        raise PermissionError("pagemap hides physical frames from this user; run the bench as root")
    return TreeMemory(rss, pss, int(unique.size) * _PAGE_BYTES, by_role)


def sample_memory(root_pid: int, excluded_pids: set[int], interval_seconds: float) -> None:
    """Samples the tree under `root_pid` until stdin closes, then prints the peak as JSON."""
    peak = MemoryPeak()
    while not select.select([sys.stdin], [], [], interval_seconds)[0]:
        tree = process_tree_memory(root_pid, excluded_pids)
        peak.rss_bytes = max(peak.rss_bytes, tree.rss_bytes)
        peak.footprint_bytes = max(peak.footprint_bytes, tree.footprint_bytes)
        peak.processes = max(peak.processes, sum(map(len, tree.pss_by_role.values())))
        if tree.pss_bytes > peak.pss_bytes:
            peak.pss_bytes = tree.pss_bytes
            peak.pss_by_role = {role: sum(sizes) for role, sizes in tree.pss_by_role.items()}
            peak.processes_by_role = {role: len(sizes) for role, sizes in tree.pss_by_role.items()}
    print(json.dumps(dataclasses.asdict(peak)))


class MemorySampler:
    """Samples this process's tree from a child process of its own, so that neither the sampler's
    memory (numpy, the frame arrays) nor its CPU time lands in the process being measured."""

    def __init__(self, excluded_pid: int, interval_seconds: float = 0.25) -> None:
        self._process = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--sample-memory-of",
                str(os.getpid()),
                "--exclude-pid",
                str(excluded_pid),
                "--sample-interval",
                str(interval_seconds),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def stop(self) -> MemoryPeak:
        output, _ = self._process.communicate(timeout=60)
        if self._process.returncode != 0:
            raise RuntimeError(f"the memory sampler failed with exit status {self._process.returncode}")
        return MemoryPeak(**json.loads(output))


@contextlib.contextmanager
def chart_stub(render_delay_ms: int, page: str = "light") -> Iterator[tuple[str, int]]:
    """The stub as a child process (not measured), serving its light or heavy chart page: its base URL
    and pid."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = (
        "from capture_service.chart_stub import run_chart_stub; "
        f"run_chart_stub('127.0.0.1', {port}, render_delay_ms={render_delay_ms})"
    )
    process = subprocess.Popen([sys.executable, "-c", code])
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{base_url}/_stub/mode", timeout=1):  # noqa: S310 (loopback)
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("chart stub did not start") from None
                time.sleep(0.1)
        setting = urllib.request.Request(  # noqa: S310 (loopback)
            f"{base_url}/_stub/mode",
            data=json.dumps({"page": page}).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(setting, timeout=5):  # noqa: S310 (loopback)
            pass
        yield base_url, process.pid
    finally:
        process.terminate()
        process.wait(10)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def pool_throughput(
    base_url: str,
    stub_pid: int,
    captures: int,
    concurrency: int,
    viewport: tuple[int, int],
    chromium_args: list[str],
) -> None:
    pool = BrowserPool(viewport=viewport, extra_args=chromium_args)
    # From before the launch: a worker's peak may as well come from starting up as from capturing.
    sampler = MemorySampler(excluded_pid=stub_pid)
    await pool.start()
    session = TradingViewSession(sessionid="bench-session", sessionid_sign="bench-sign")
    slots = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    sizes: list[int] = []

    async def one(index: int) -> None:
        url = chart_url(base_url, f"layout{index % 7}", TICKERS[index % len(TICKERS)], "60")
        async with slots:
            started = time.perf_counter()
            shot = await capture_chart(pool, url, session, timeout_seconds=20)
            latencies.append(time.perf_counter() - started)
            sizes.append(len(shot.png))

    try:
        # Warm-up: the first contexts pay for Chromium's caches; not what a long-running worker sees.
        await asyncio.gather(*(one(index) for index in range(concurrency)))
        latencies.clear()
        sizes.clear()
        started = time.perf_counter()
        await asyncio.gather(*(one(index) for index in range(captures)))
        elapsed = time.perf_counter() - started
    finally:
        peak = sampler.stop()
        await pool.close()

    print(f"captures: {captures} at concurrency {concurrency}, viewport {viewport[0]}x{viewport[1]}")
    print(f"CPUs: {os.cpu_count()}, load average {' '.join(f'{load:.2f}' for load in os.getloadavg())}")
    # The executable's name, not its path on this machine (the distribution's or Playwright's own).
    where, _, version = pool.launched.partition(", version ")
    print(f"Chromium: {Path(where).name if where.startswith('/') else where}, version {version}")
    print(f"Chromium launches: {pool.launches}, extra arguments: {' '.join(chromium_args) or 'none'}")
    print(f"throughput: {captures / elapsed * 60:.1f} captures/minute ({elapsed:.1f} s)")
    print(
        "latency per capture (s): "
        f"median {statistics.median(latencies):.2f}, p90 {percentile(latencies, 0.9):.2f}, "
        f"p99 {percentile(latencies, 0.99):.2f}, max {max(latencies):.2f}"
    )
    print(f"PNG size: median {statistics.median(sizes) / 1024:.0f} KiB")
    print(
        f"peak memory of this process and its children ({peak.processes} processes at most): "
        f"RSS {peak.rss_bytes / 2**20:.0f} MiB, PSS {peak.pss_bytes / 2**20:.0f} MiB, "
        f"footprint {peak.footprint_bytes / 2**20:.0f} MiB"
    )
    print("PSS at that peak by role (MiB):")
    for role, pss in sorted(peak.pss_by_role.items(), key=lambda item: -item[1]):
        print(f"  {role:<28} {peak.processes_by_role[role]:>2} x  {pss / 2**20:6.1f}")


def alert_body(ticker: str, price: int) -> bytes:
    """A TradingView alert in the standard format; the price makes each body distinct (no dedupe)."""
    lines = (
        "🚨 ADX DEF [APIDEVS]",
        "📈 Señal: Divergencia Alcista",
        f"🪙 Ticker: {ticker}",
        f"💰 Precio: ${price}",
    )
    return "\n".join(lines).encode()


@dataclass
class PremiumSample:
    signal_id: str
    free_queued: int


async def _trader(stack: Stack, plan: int, cookies: tuple[str, str]) -> str:
    """A user with a TradingView session; returns their webhook URL."""
    async with open_channel(stack.signal_addr, stack.key) as channel:
        users = user_service_pb2_grpc.UserServiceStub(channel)
        created = await users.CreateUser(
            user_service_pb2.CreateUserRequest(plan=plan, default_chart_id="bench")
        )
        await users.SetTradingViewSession(
            user_service_pb2.SetTradingViewSessionRequest(
                user_id=created.user.user_id, sessionid=cookies[0], sessionid_sign=cookies[1]
            )
        )
    return created.webhook_url


async def _post(client: httpx.AsyncClient, url: str, body: bytes) -> str:
    answer = await client.post(url, content=body, headers={"content-type": "text/plain"})
    if answer.status_code != 200:
        raise RuntimeError(f"webhook answered {answer.status_code}: {answer.text[:200]}")
    return str(answer.json()["signal_id"])


async def relayed(signals: signal_service_pb2_grpc.SignalServiceStub) -> None:
    """Until the outbox relay has sent every committed capture job to Redis."""
    while True:
        status = await signals.GetServiceStatus(signal_service_pb2.GetServiceStatusRequest())
        if status.outbox_backlog == 0:
            return
        await asyncio.sleep(0.05)


async def measure_premium_wait(stack: Stack, free_jobs: int, samples: int, concurrency: int) -> None:
    namespace = stack.env["ALERTS_REDIS_NAMESPACE"]
    settings = CommonSettings(redis_namespace=namespace)
    free_queue = f"{dramatiq_namespace(settings)}:{capture_queue('free')}"
    broker_redis = redis.Redis.from_url(stack.env["ALERTS_REDIS_URL"])
    deadline = time.monotonic() + 120
    while not broker_redis.zcard(capture_workers_key(settings)):
        if time.monotonic() > deadline:
            raise RuntimeError("the capture worker did not start; see its log under the work directory")
        await asyncio.sleep(0.2)
    free_url = await _trader(stack, resources_pb2.PLAN_FREE, ("bench-free", "bench-free-sign"))
    premium_url = await _trader(stack, resources_pb2.PLAN_PREMIUM, ("bench-premium", "bench-premium-sign"))
    prices = iter(range(1_000, 10_000_000))

    async with (
        httpx.AsyncClient(timeout=30) as client,
        open_channel(stack.signal_addr, stack.key) as channel,
    ):
        signals = signal_service_pb2_grpc.SignalServiceStub(channel)
        posting = asyncio.Semaphore(16)

        async def post_free() -> None:
            async with posting:
                await _post(client, free_url, alert_body("BINANCE:ETHUSDT", next(prices)))

        await asyncio.gather(*(post_free() for _ in range(free_jobs)))
        await relayed(signals)

        taken: list[PremiumSample] = []
        for _ in range(samples):
            # Arrive at a random point of the running captures, not just after one finished.
            await asyncio.sleep(random.uniform(0, 1.5))
            queued = int(broker_redis.llen(free_queue))
            signal_id = await _post(client, premium_url, alert_body("NASDAQ:AAPL", next(prices)))
            taken.append(PremiumSample(signal_id=signal_id, free_queued=queued))
            while True:
                found = await signals.GetSignal(signal_service_pb2.GetSignalRequest(signal_id=signal_id))
                if found.screenshot_status in (
                    resources_pb2.SCREENSHOT_STATUS_COMPLETED,
                    resources_pb2.SCREENSHOT_STATUS_FAILED,
                ):
                    if found.screenshot_status != resources_pb2.SCREENSHOT_STATUS_COMPLETED:
                        raise RuntimeError(f"premium capture failed: {found.screenshot_error}")
                    break
                await asyncio.sleep(0.02)
    broker_redis.close()

    connection = await asyncpg.connect(stack.dsn)
    try:
        rows = await connection.fetch(
            "SELECT s.id::text AS signal_id,"
            " extract(epoch FROM c.claimed_at - s.created_at) AS wait_s,"
            " extract(epoch FROM c.completed_at - s.created_at) AS done_s"
            " FROM signals s JOIN screenshots c ON c.signal_id = s.id WHERE s.id = ANY($1::uuid[])",
            [sample.signal_id for sample in taken],
        )
        capture_ms = await connection.fetchval(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) FROM screenshots"
            " WHERE status = 'completed'"
        )
        completed = await connection.fetchval("SELECT count(*) FROM screenshots WHERE status = 'completed'")
    finally:
        await connection.close()
    waits = [float(row["wait_s"]) for row in rows]
    totals = [float(row["done_s"]) for row in rows]
    ahead = [sample.free_queued for sample in taken]
    print(
        f"premium wait with free jobs queued ahead ({samples} premium webhooks, one worker process at "
        f"concurrency {concurrency}, {free_jobs} free webhooks sent first; "
        f"{min(ahead)}-{max(ahead)} free jobs still queued when each premium webhook was sent)"
    )
    print(
        "  webhook received -> capture claimed (s): "
        f"median {statistics.median(waits):.2f}, p90 {percentile(waits, 0.9):.2f}, max {max(waits):.2f}"
    )
    print(
        "  webhook received -> screenshot COMPLETED (s): "
        f"median {statistics.median(totals):.2f}, p90 {percentile(totals, 0.9):.2f}, max {max(totals):.2f}"
    )
    print(f"  one capture (median duration_ms, {completed} captures completed): {capture_ms / 1000:.2f} s")


def premium_wait(render_delay_ms: int, free_jobs: int, samples: int, concurrency: int) -> None:
    with (
        chart_stub(render_delay_ms) as (base_url, _),
        tempfile.TemporaryDirectory(prefix="bench-capture-") as workdir,
        Stack(
            Path(workdir),
            capture_workers=1,
            extra_env={
                **unlimited_plans_env(),
                "ALERTS_TRADINGVIEW_URL": base_url,
                "ALERTS_CAPTURE_CONCURRENCY": str(concurrency),
            },
        ) as stack,
    ):
        asyncio.run(measure_premium_wait(stack, free_jobs, samples, concurrency))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    # The premium wait starts the whole stack (about two minutes on two loaded cores), so it is asked for.
    parser.add_argument("--parts", nargs="+", choices=("pool", "premium-wait"), default=["pool"])
    parser.add_argument("--captures", type=int, default=60)
    parser.add_argument(
        "--page",
        choices=("light", "heavy"),
        default="light",
        help="the chart stub's page: light, or heavy (MB of script, a streamed feed, a late pane)",
    )
    parser.add_argument("--concurrency", type=int, default=3)
    parser.add_argument(
        "--render-delay-ms", type=int, default=300, help="the stub's simulated chart load time"
    )
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--free-jobs", type=int, default=500)
    parser.add_argument("--premium-samples", type=int, default=10)
    # The sampler's own run (see MemorySampler), not for use by hand.
    parser.add_argument("--sample-memory-of", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--exclude-pid", type=int, action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--sample-interval", type=float, default=0.25, help=argparse.SUPPRESS)
    parser.add_argument(
        "--chromium-arg",
        action="append",
        default=[],
        help="an extra Chromium argument for the pool, on top of the worker's own (repeatable)",
    )
    options = parser.parse_args()
    if options.sample_memory_of is not None:
        excluded = {os.getpid(), *options.exclude_pid}
        sample_memory(options.sample_memory_of, excluded, options.sample_interval)
        return
    viewport = (options.width, options.height)
    if "pool" in options.parts:
        adopt_orphaned_descendants()
        with chart_stub(options.render_delay_ms, options.page) as (base_url, stub_pid):
            asyncio.run(
                pool_throughput(
                    base_url, stub_pid, options.captures, options.concurrency, viewport, options.chromium_arg
                )
            )
    if "premium-wait" in options.parts:
        premium_wait(options.render_delay_ms, options.free_jobs, options.premium_samples, options.concurrency)


if __name__ == "__main__":
    main()
