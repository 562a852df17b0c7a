"""`make bench`: every benchmark, one result JSON each under bench/results/, then docs/PERFORMANCE.md.

Each benchmark runs as its own process with a time limit. bench_ingest.py writes its own JSON; the others
print theirs (or text), which is kept with the commit, machine, load and command around it. Benchmarks
that are absent are skipped and the report says so. The whole run takes about 8 minutes on 2 cores (the
scale benchmark about 2); a limit stops a benchmark that hangs. bench_webhook.py (sequential posts) is
left out: the ingest benchmark's steady load covers it.

    .venv/bin/python bench/run_all.py            # everything
    .venv/bin/python bench/run_all.py --only ingest parser
    .venv/bin/python bench/run_all.py --only scale_full   # by hand only: 10 M signals, over an hour
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from meta import load_average, record
from report import write_report

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
# Benchmarks run from the repository root; paths given to them are relative to it, so results name none
# of this machine's directories.
RESULTS_ARGUMENT = "bench/results"
STOP_GRACE_SECONDS = 20

# name -> (script, arguments, time limit in seconds)
BENCHMARKS: dict[str, tuple[str, list[str], float]] = {
    "ingest": ("bench_ingest.py", ["--out", f"{RESULTS_ARGUMENT}/ingest.json"], 600),
    "profile": (
        "profile_ingest.py",
        ["--rate", "100", "--seconds", "10", "--summary", f"{RESULTS_ARGUMENT}/profile_summary.json"],
        90,
    ),
    "pinned": ("bench_pinned.py", [], 150),
    "capture": ("bench_capture.py", ["--captures", "30", "--concurrency", "3"], 100),
    "capture_premium_wait": (
        "bench_capture.py",
        ["--parts", "premium-wait", "--free-jobs", "500", "--premium-samples", "5"],
        120,
    ),
    "stream": ("bench_stream.py", ["--subscribers", "100", "--writes", "300", "--idle", "1000"], 150),
    "parser": ("bench_parser.py", ["--rounds", "3", "--messages", "5000"], 60),
    "storage": ("bench_storage.py", ["--rounds", "50"], 60),
    # 200 k signals; the full 10 M by hand (BY_HAND).
    "scale": ("bench_scale.py", ["--size", "small"], 600),
}
# Run only when named in --only: too long for `make bench`.
BY_HAND: dict[str, tuple[str, list[str], float]] = {
    "scale_full": ("bench_scale.py", ["--size", "full"], 7200),
}

# Benchmarks that write their own result file; run_all keeps only the run's envelope beside it.
FILE_RESULTS = {"ingest": "ingest.json", "profile": "profile_summary.json"}


def parse_output(stdout: str) -> dict[str, Any]:
    """The benchmark's JSON when it printed one, else its text."""
    start = stdout.find("{")
    if start >= 0:
        try:
            return json.loads(stdout[start:])
        except json.JSONDecodeError:
            pass
    return {"text": stdout.strip()}


def run_one(name: str, script: str, arguments: list[str], limit: float) -> dict[str, Any]:
    command = [sys.executable, str(BENCH / script), *arguments]
    envelope = record({"arguments": arguments, "time_limit_s": limit})
    envelope["command"] = " ".join([".venv/bin/python", f"bench/{script}", *arguments])
    started = time.perf_counter()
    # Its own session, so that a time limit stops the servers and load generators it started as well.
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=BENCH.parent,
        start_new_session=True,
    ) as child:
        try:
            stdout, stderr = child.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            # SIGTERM first: the benchmark's stack then drops its databases on the way out.
            os.killpg(child.pid, signal.SIGTERM)
            try:
                _, stderr = child.communicate(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                _, stderr = child.communicate()
            envelope.update(status="timeout", stderr=stderr[-2000:])
            return envelope
    envelope["wall_s"] = round(time.perf_counter() - started, 1)
    envelope["load_average_at_end"] = load_average()
    if child.returncode != 0:
        envelope.update(status=f"exit {child.returncode}", stderr=stderr[-3000:])
        return envelope
    envelope["status"] = "ok"
    if name in FILE_RESULTS:
        envelope["result"] = {"file": FILE_RESULTS[name]}
    else:
        envelope["result"] = parse_output(stdout)
    return envelope


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHMARKS | BY_HAND), default=None)
    options = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    chosen = (
        BENCHMARKS
        if options.only is None
        else {name: spec for name, spec in (BENCHMARKS | BY_HAND).items() if name in options.only}
    )
    for name, (script, arguments, limit) in chosen.items():
        if not (BENCH / script).exists():
            print(f"-- {name}: bench/{script} is absent; skipped", flush=True)
            continue
        print(f"-- {name}: bench/{script} {' '.join(arguments)} (load {load_average()})", flush=True)
        envelope = run_one(name, script, arguments, limit)
        print(f"   {envelope['status']} in {envelope.get('wall_s', limit)} s", flush=True)
        target = RESULTS / (f"{name}_run.json" if name in FILE_RESULTS else f"{name}.json")
        target.write_text(json.dumps(envelope, indent=2) + "\n")
    report = write_report(RESULTS, BENCH.parent / "docs")
    print(f"-- wrote {report} in {time.perf_counter() - started:.0f} s total")


if __name__ == "__main__":
    main()
