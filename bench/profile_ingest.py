"""Where an ingest's CPU goes: py-spy samples the edge and the signal service under steady open-loop load.

Starts the real stack, sends `--rate` webhooks/s for `--seconds` from bench/loadgen.py, records both
services with py-spy (collapsed stacks, GIL-holding samples only, i.e. CPU rather than waiting), and
prints for each the share of samples per function (inclusive) and the CPU milliseconds per request.
The collapsed stacks are kept under --out-dir for flame graphs.

    .venv/bin/python bench/profile_ingest.py --rate 200 --seconds 15 --out-dir docs/perf
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ingest import BODY, CpuMeter, create_users, run_plan
from harness import Stack, unlimited_plans_env
from meta import command_line

PY_SPY = Path(sys.executable).with_name("py-spy")


def code_frames(stack: str) -> list[str]:
    """A collapsed stack's frames without py-spy's root frame per process (``process <pid>:"<command>"``,
    from --subprocesses): it names no code, only this run's process id and paths."""
    return [frame for frame in stack.split(";") if not frame.startswith("process ")]


def top_frames(collapsed: Path, limit: int) -> list[tuple[str, float]]:
    """Functions by the share of samples whose stack contains them (inclusive time)."""
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        samples = int(count)
        total += samples
        frames = {
            frame.split(" (")[0] + " (" + frame.split(" (")[-1].split(":")[0] + ")"
            for frame in code_frames(stack)
        }
        for frame in frames:
            inclusive[frame] += samples
    return [(frame, round(100 * count / max(total, 1), 1)) for frame, count in inclusive.most_common(limit)]


# Where a sample is counted: the first of these found in its stack, searched in this order.
PHASES = (
    "RateLimiter",
    "WebhookRepository",
    "WebhookIngestor._read_user",
    "parse_alert",
    "WebhookIngestor",
    "SignalServicer",
    "_ServerInterceptor",
    "_wrap_handler",
    "OutboxRelay",
    "EventHub",
    "AuditWriter",
    "read_body",
    "InterceptedUnaryUnaryCall",
    "UnaryUnaryCall",
    "receive_webhook",
    "RequestResponseCycle",
    "HttpToolsProtocol",
    "greenlet_spawn",
    "Thread._bootstrap",
    "Runner.run",
)


def phases(collapsed: Path) -> dict[str, float]:
    """Share of samples per phase; "Runner.run" alone is the event loop's own C code (I/O, gRPC core)."""
    shares: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [frame.split(" (")[0] for frame in code_frames(stack)]
        total += int(count)
        phase = next(
            (name for name in PHASES if any(frame.startswith(name) for frame in frames)),
            "other: " + frames[-1] if frames else "other: no Python frame",
        )
        shares[phase] += int(count)
    return {name: round(100 * count / max(total, 1), 1) for name, count in shares.most_common(16)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--top", type=int, default=45)
    parser.add_argument("--out-dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--cpu-only", action="store_true", help="no py-spy: CPU per request undisturbed")
    parser.add_argument("--summary", type=Path, default=None, help="also write the JSON summary here")
    options = parser.parse_args()
    options.out_dir.mkdir(parents=True, exist_ok=True)
    extra_env = unlimited_plans_env()
    with (
        tempfile.TemporaryDirectory() as tmp,
        Stack(Path(tmp), with_storage=False, extra_env=extra_env) as stack,
    ):
        urls = asyncio.run(create_users(stack, options.users))
        pids = {name: process.process.pid for name, process in stack.processes.items() if process.process}
        recorders = (
            {}
            if options.cpu_only
            else {
                name: subprocess.Popen(
                    [
                        str(PY_SPY),
                        "record",
                        "--pid",
                        str(pid),
                        "--format",
                        "raw",
                        "--gil",
                        # Sampling without pausing the process: the profiled run keeps its pace.
                        "--nonblocking",
                        "--subprocesses",
                        "--rate",
                        "250",
                        "--duration",
                        str(int(options.seconds) + 2),
                        "--output",
                        str(options.out_dir / f"profile_{name}.collapsed"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for name, pid in pids.items()
            }
        )
        time.sleep(1.0)
        plan = {
            "urls": urls,
            "rate": options.rate,
            "duration": options.seconds,
            "connections": 64,
            "body": BODY.format(run=f"{time.time_ns():x}"),
        }
        with CpuMeter(pids, stack.dsn) as meter:
            result = run_plan("loadgen.py", plan)
        for recorder in recorders.values():
            recorder.wait(60)
    report = {
        "rate": options.rate,
        "seconds": options.seconds,
        "statuses": result["statuses"],
        "p50_ms": result["p50_ms"],
        "p99_ms": result["p99_ms"],
        "cpu_ms_per_request": {
            name: round(seconds * 1000 / result["requests"], 3) for name, seconds in meter.used.items()
        },
        "load_average": [round(value, 2) for value in os.getloadavg()],
        "phase_percent": {name: phases(options.out_dir / f"profile_{name}.collapsed") for name in recorders},
        "top_inclusive_percent": {
            name: top_frames(options.out_dir / f"profile_{name}.collapsed", options.top) for name in recorders
        },
        "command": command_line(),
    }
    if options.summary:
        options.summary.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps(report, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
