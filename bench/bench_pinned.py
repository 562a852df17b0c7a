"""The peers' set-up: the load generator on one core, everything of ours on the other, a new connection
per request; ours, the bare Litestar route and the fastest peer measured in the same sitting.

This benchmark pins itself to the server core before it starts an embedded PostgreSQL and Redis, the signal
service and the edge (each inherits the core), and runs the load generator on the other core with
`Connection: close` on every request. Scenarios: the burst (3,000 webhooks from 1,000 users within 1 s,
open loop; every 2xx matched to its stored row) and a closed loop (`--clients` clients back to back for
`--seconds`), against our stack, against the bare Litestar route of bench/floor_app.py, and against the
peer: fabston/TradingView-Webhook-Bot (Flask under waitress, persists nothing), run from the folder given
with `--peer-dir` (or BENCH_PEER_DIR) exactly as its README says, in a virtualenv of its own that is made
once under bench/.peer-venv (`pip install flask waitress`). Without a peer folder the peer is skipped.

    .venv/bin/python bench/bench_pinned.py --peer-dir PATH/TO/fabston
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
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

from alerts.processes import ManagedProcess, free_port

LOADGEN_CPUS = frozenset({0})
SERVER_CPUS = frozenset({1})
DEADLINE_MS = 3000.0
# The peer's own virtualenv (gitignored), made once; rebuilt when the requirements below change.
PEER_VENV = Path(__file__).resolve().parent / ".peer-venv"
PEER_REQUIREMENTS = ("flask", "waitress")
# What fabston's README has TradingView post (its key is "k" in the benchmarked copy); a load generator
# template, which numbers every alert.
PEER_BODY = '{{"key":"k","msg":"Long #BTCUSDT at `67890.50`, alert {n}"}}'


def burst_plan(urls: list[str], count: int, body: str) -> dict[str, Any]:
    return {
        "urls": urls,
        "rate": count,
        "duration": 1.0,
        "connections": 1000,
        "timeout": 10,
        "samples": True,
        "close": True,
        "body": body,
    }


def closed_plan(urls: list[str], clients: int, seconds: float, body: str) -> dict[str, Any]:
    return {
        "urls": urls,
        "clients": clients,
        "duration": seconds,
        "timeout": 10,
        "close": True,
        "body": body,
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
        f" p99 {result['p99_ms']:.1f} ms, {result['connections_opened']:,} connections opened,"
        f" load average before {result['load_average_before'][0]:.2f}\n"
        f"{'':<24} CPU ms per webhook: {result['cpu_ms_per_request']}"
    )


def peer_venv() -> Path:
    """The peer's virtualenv, outside the project's: its interpreter's folder of scripts."""
    marker = PEER_VENV / "requirements.txt"
    wanted = "\n".join(PEER_REQUIREMENTS) + "\n"
    if not (marker.exists() and marker.read_text() == wanted):
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(PEER_VENV)], check=True)
        pip = [str(PEER_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", *PEER_REQUIREMENTS]
        subprocess.run(pip, check=True)
        marker.write_text(wanted)
    return PEER_VENV / "bin"


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def peer_server(peer_dir: Path, workdir: Path) -> Iterator[tuple[str, int]]:
    """`waitress-serve --host=127.0.0.1 --port=PORT main:app` with the peer's folder importable, on this
    process's core, for as long as the block runs: its webhook URL and its process id. It prints a line
    per alert, as it does in production; that goes to its log."""
    scripts = peer_venv()
    port = free_port()
    peer = ManagedProcess(
        "peer",
        [str(scripts / "waitress-serve"), "--host=127.0.0.1", f"--port={port}", "main:app"],
        # Nothing of ours (no keys, no database URL): only what it needs to start.
        {"PATH": f"{scripts}:{os.environ.get('PATH', '')}", "PYTHONPATH": str(peer_dir.resolve())},
        ready=lambda: port_open(port),
        log_path=workdir / "peer.log",
    )
    peer.start()
    try:
        peer.wait_ready(30)
        assert peer.process is not None
        yield f"http://127.0.0.1:{port}/webhook", peer.process.pid
    finally:
        peer.stop()


def run_peer(peer_dir: Path, workdir: Path, options: argparse.Namespace) -> tuple[list[str], dict[str, Any]]:
    """The peer through the same two scenarios: its lines, and its closed-loop result."""
    with peer_server(peer_dir, workdir) as (url, pid):
        burst = run_plan("loadgen.py", burst_plan([url], options.burst, PEER_BODY), LOADGEN_CPUS)
        lines = [burst_line("burst, peer", burst, burst.pop("samples"))]
        plan = closed_plan([url], options.clients, options.seconds, PEER_BODY)
        closed = measured(lambda: run_plan("loadgen.py", plan, LOADGEN_CPUS), CpuMeter({"peer": pid}, None))
        lines.append(closed_line("closed loop, peer", closed, options.clients))
    return lines, {"burst": burst, "closed": closed}


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
    with tempfile.TemporaryDirectory() as tmp:
        with Stack(Path(tmp), with_storage=False, extra_env=unlimited_plans_env(), embedded=True) as stack:
            urls = asyncio.run(create_users(stack, options.users))
            lines.append(f"{options.users:,} users, unlimited plans")
            tag = f"{time.time_ns():x}"
            before = stack.count_sync()
            lines.append(load_line())
            plan = burst_plan(urls, options.burst, BODY.format(run=tag))
            burst = run_plan("loadgen.py", plan, LOADGEN_CPUS)
            samples = burst.pop("samples")
            wait_for_rows(stack, before, burst["ok"])
            stored = reconcile(stack.dsn, tag, samples)
            lines.append(burst_line("burst, ours", burst, samples))
            lines.append(
                f"{'':<24} {stored['rows_stored']:,} rows stored, {stored['lost']} answered 2xx but not"
                f" stored, {stored['stored_without_2xx']} stored after the client gave up"
            )
            time.sleep(2)
            body = BODY.format(run=f"{time.time_ns():x}")
            closed_loop = closed_plan(urls, options.clients, options.seconds, body)
            closed = measured(lambda: run_plan("loadgen.py", closed_loop, LOADGEN_CPUS), server_meter(stack))
            lines.append(closed_line("closed loop, ours", closed, options.clients))

            with bare_route(stack, Path(tmp)) as (floor_url, floor_pid):
                bare = [url.replace(stack.edge_url, floor_url) for url in urls]
                floor_burst = run_plan("loadgen.py", burst_plan(bare, options.burst, body), LOADGEN_CPUS)
                lines.append(burst_line("burst, bare route", floor_burst, floor_burst.pop("samples")))
                floor_plan = closed_plan(bare, options.clients, options.seconds, body)
                floor_closed = measured(
                    lambda: run_plan("loadgen.py", floor_plan, LOADGEN_CPUS),
                    CpuMeter({"floor_http": floor_pid}, None),
                )
                lines.append(closed_line("closed loop, bare route", floor_closed, options.clients))
        # The peer runs once ours is stopped, on the same core, so neither competes with the other.
        if options.peer_dir is None:
            lines.append("peer skipped: give its folder with --peer-dir or BENCH_PEER_DIR")
            return lines
        lines.append(load_line())
        peer_lines, peer = run_peer(options.peer_dir, Path(tmp), options)
    lines += peer_lines
    lines += verdict(burst, closed, peer)
    return lines


def load_line() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def verdict(burst: dict[str, Any], closed: dict[str, Any], peer: dict[str, Any]) -> list[str]:
    """Ours against the peer: issue 24's targets."""
    rate, peer_rate = closed["achieved_rate"], peer["closed"]["achieved_rate"]
    p99, peer_p99 = burst["p99_ms"], peer["burst"]["p99_ms"]
    p99_limit = max(peer_p99, 50.0)
    return [
        f"ours / peer, closed loop: {rate:,.0f} / {peer_rate:,.0f} webhooks/s = {rate / peer_rate:.2f}"
        f" (target >= 1: {'met' if rate >= peer_rate else 'not met'})",
        f"ours / peer, burst p99: {p99:.1f} / {peer_p99:.1f} ms"
        f" (target <= {p99_limit:.0f} ms: {'met' if p99 <= p99_limit else 'not met'})",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--burst", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--peer-dir",
        type=Path,
        default=os.environ.get("BENCH_PEER_DIR") or None,
        help="fabston/TradingView-Webhook-Bot's folder (main.py, handler.py, config.py); skipped when absent",
    )
    options = parser.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("needs two CPUs: one for the load generator, one for the server")
    if options.peer_dir is not None and not (options.peer_dir / "main.py").is_file():
        sys.exit(f"{options.peer_dir} is not the peer's folder: it has no main.py")
    print("\n".join(run(options)))


if __name__ == "__main__":
    main()
