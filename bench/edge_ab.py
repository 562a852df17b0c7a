"""Two edges in one sitting: this tree's and another tree's, in turn, in front of the same signal service.

What a change to the edge saves, in CPU per webhook, on a machine too busy for two separate runs to be
compared: both edges run at once beside one stack (bench/bench_pinned.py's pinning: everything on CPU 1,
the load generator on CPU 0, a new connection per request), and closed loops go to each in turn, `--rounds`
times. The other tree is a plain copy of the sources (`git archive main | tar -x -C DIR`); its edge runs
with this virtualenv, the copy first on its import path.

    .venv/bin/python bench/edge_ab.py --other-tree DIR --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ingest import BODY, CpuMeter, create_users, measured, run_plan
from bench_pinned import LOADGEN_CPUS, SERVER_CPUS, closed_line, closed_plan, port_open, server_meter
from harness import Stack, unlimited_plans_env

from alerts.processes import ManagedProcess, free_port


def run(options: argparse.Namespace) -> list[str]:
    os.sched_setaffinity(0, SERVER_CPUS)
    other_tree = options.other_tree.resolve()
    lines = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        Stack(Path(tmp), with_storage=False, extra_env=unlimited_plans_env(), embedded=True) as stack,
    ):
        urls = asyncio.run(create_users(stack, options.users))
        ours = stack.processes["edge"]
        port = free_port()
        env = {
            **ours.env,
            "ALERTS_EDGE_PORT": str(port),
            # A spool of its own: the two edges' replayers would otherwise take turns at one.
            "ALERTS_DATA_DIR": str(Path(tmp) / "other-edge"),
            "PYTHONPATH": f"{other_tree}:{other_tree / 'proto'}",
            # `python -m` puts the working directory (this tree) first on the path otherwise.
            "PYTHONSAFEPATH": "1",
        }
        imported = subprocess.run(
            [sys.executable, "-c", "import edge.app; print(edge.app.__file__)"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if not Path(imported).is_relative_to(other_tree):
            sys.exit(f"the other edge would import {imported}, not the other tree's")
        other = ManagedProcess(
            "other-edge",
            ours.argv,
            env,
            ready=lambda: port_open(port),
            log_path=Path(tmp) / "other-edge.log",
        )
        other.start()
        try:
            other.wait_ready(60)
            assert ours.process is not None
            assert other.process is not None
            edges = {
                "this tree": (urls, ours.process.pid),
                "other tree": (
                    [url.replace(stack.edge_url, f"http://127.0.0.1:{port}") for url in urls],
                    other.process.pid,
                ),
            }
            roots = {name: pid for name, pid in server_meter(stack).roots.items() if name != "edge"}
            for name, (targets, _) in edges.items():
                run_plan(
                    "loadgen.py",
                    closed_plan(targets, options.clients, 2, BODY.format(run=f"warm-{name}")),
                    LOADGEN_CPUS,
                )
            for round_ in range(options.rounds):
                for name, (targets, pid) in edges.items():
                    plan = closed_plan(
                        targets, options.clients, options.seconds, BODY.format(run=f"{time.time_ns():x}")
                    )
                    result = measured(
                        partial(run_plan, "loadgen.py", plan, LOADGEN_CPUS),
                        CpuMeter({**roots, "edge": pid}, stack.dsn),
                    )
                    lines.append(closed_line(f"{name}, round {round_ + 1}", result, options.clients))
        finally:
            other.stop()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--other-tree", type=Path, required=True, help="a copy of the sources to compare")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=8.0)
    options = parser.parse_args()
    if not (options.other_tree / "edge" / "app.py").is_file():
        sys.exit(f"{options.other_tree} is not a copy of this project's sources: it has no edge/app.py")
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("needs two CPUs: one for the load generator, one for the server")
    print("\n".join(run(options)))


if __name__ == "__main__":
    main()
