"""The signal service's and PostgreSQL's CPU per webhook, with no edge and no HTTP in the way.

Starts the stack on its own embedded PostgreSQL and Redis, creates `--users` users, then calls
BatchIngestWebhooks directly as the edge would: `--inflight` calls at a time, `--batch` webhooks each, for
`--seconds` (after a short warm-up), and prints the CPU milliseconds per webhook of the signal service
process and of the PostgreSQL backends. CPU time rather than latency, because the machine may be shared:
a change to the intake is judged by this figure, measured before and after in the same sitting.
`--profile FILE` also records the signal service with py-spy (collapsed stacks, GIL-holding samples only).

    .venv/bin/python bench/bench_signal_intake.py --batch 20 --seconds 12
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ingest import BODY, CpuMeter, create_users
from google.protobuf import timestamp_pb2
from harness import Stack, unlimited_plans_env

from apidevs.alerts.v1 import signal_service_pb2, signal_service_pb2_grpc
from mesh.grpc import open_channel

PY_SPY = Path(sys.executable).with_name("py-spy")


def batch(
    tokens: list[str], caller: int, sent: int, size: int
) -> signal_service_pb2.BatchIngestWebhooksRequest:
    now = timestamp_pb2.Timestamp()
    now.GetCurrentTime()
    run = f"{caller}-{time.time_ns():x}"
    return signal_service_pb2.BatchIngestWebhooksRequest(
        requests=[
            signal_service_pb2.IngestWebhookRequest(
                webhook_token=tokens[(caller * 7919 + sent + item) % len(tokens)],
                body=BODY.format(run=run).replace("{n}", str(item)).encode(),
                received_at=now,
                content_type="text/plain",
                source_ip="203.0.113.7",
                user_agent="Go-http-client/1.1",
                request_id=f"{run}-{item}",
            )
            for item in range(size)
        ]
    )


async def drive(stack: Stack, tokens: list[str], options: argparse.Namespace, seconds: float) -> int:
    """Webhooks stored in `seconds` of back-to-back calls; any refused one stops the run."""
    sent = 0
    async with open_channel(
        stack.signal_addr, stack.services.keys.edge if stack.services else None
    ) as channel:
        stub = signal_service_pb2_grpc.SignalServiceStub(channel)
        end = time.monotonic() + seconds

        async def caller(number: int) -> None:
            nonlocal sent
            while time.monotonic() < end:
                reply = await stub.BatchIngestWebhooks(batch(tokens, number, sent, options.batch))
                refused = [result for result in reply.results if result.WhichOneof("result") != "response"]
                if refused:
                    raise RuntimeError(f"{len(refused)} webhooks refused: {refused[0]}")
                sent += options.batch

        await asyncio.gather(*(caller(number) for number in range(options.inflight)))
    return sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--inflight", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=12)
    parser.add_argument("--profile", type=Path, default=None)
    options = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        Stack(Path(tmp), with_storage=False, extra_env=unlimited_plans_env(), embedded=True) as stack,
    ):
        urls = asyncio.run(create_users(stack, options.users))
        tokens = [url.rstrip("/").rsplit("/", 1)[1] for url in urls]
        signal = stack.processes["signal"].process
        assert signal is not None
        asyncio.run(drive(stack, tokens, options, 3.0))
        spy = [str(PY_SPY), "record", "--pid", str(signal.pid), "--format", "raw", "--gil", "--nonblocking"]
        spy += ["--rate", "250", "--duration", str(int(options.seconds)), "--output", str(options.profile)]
        recorder = (
            subprocess.Popen(spy, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if options.profile
            else None
        )
        started = time.monotonic()
        with CpuMeter({"signal": signal.pid}, stack.dsn) as meter:
            sent = asyncio.run(drive(stack, tokens, options, options.seconds))
        wall = time.monotonic() - started
        if recorder is not None:
            recorder.wait(60)
    per_webhook = {name: round(seconds * 1000 / sent, 3) for name, seconds in meter.used.items()}
    print(
        f"batch {options.batch}, {options.inflight} calls in flight: {sent:,} webhooks, {sent / wall:,.0f}/s;"
        f" CPU ms per webhook: signal {per_webhook['signal']}, PostgreSQL {per_webhook['postgres_backends']};"
        f" load average {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
