"""A year of alerts in the database: every path measured on the empty database, then on the seeded one.

Run: .venv/bin/python bench/bench_scale.py [--size small|full] [--signals N]

Only the replay, against a freshly seeded database (seeding, then each replay --repeats times, nothing else;
about two minutes at this size), optionally with py-spy recording the signal and storage services:

    .venv/bin/python bench/bench_scale.py --size small --signals 300000 --heavy-signals 80000 \
        --only replay --repeats 3 [--profile /tmp/replay]

The whole system runs as processes on a database of its own (bench/harness.py). First the empty
database's figures; then N signals are seeded server-side (INSERT ... SELECT over generate_series, the
fastest way in: no row crosses the wire) with a screenshot row each, their events, an audit row each and
outbox history, skewed as a real platform is (a few users with many signals, most with a few thousand,
spread over the past 360 days) and a notification delivery for half of them; then a CHECKPOINT, so that
the seeded figures measure the database rather than the write-back of a 20-minute bulk load no year of
ingest makes; then the same figures again, then retention and audit pruning under ingest load, then size
and backup figures. Every ingest window records what PostgreSQL's checkpointer and WAL did meanwhile (the
checkpoints, WAL megabytes, the share of full-page images) and lists each second whose slowest answer took
over 50 ms, with the checkpointer's state and the WAL written in that second. Full size (the default):
10 M signals, 1,000 users, five of them with 200 k signals; small (`make bench`): 200 k signals, 100
users, three with 20 k.

Measured, each with p50/p99: ingest at 300/s open loop (as bench_ingest.py); ListSignals first page,
every filter (ticker, indicator, signal type, result, a week's date range) and page 100 by page token, for
the heaviest user and a light one; GetUserStats for the heaviest user; SubscribeSignals replay from a
cursor 100 k events back (or all of a small user's), events/s until live, in batches of 1,000 events per
message and one event per message (a client that does not ask for batches). Then retention expiring the due
screenshots of free-plan users and `alerts audit prune` (each: duration, ingest p99 meanwhile; for
retention also how many of the signals' and screenshots' row updates were heap-only); bytes per signal for
every table with its indexes; pg_dump and pg_restore time and size.

Only ListSignals (every filter and page 100, the heavy and the light user) and GetUserStats, `--samples`
calls each; `--explain` writes the statements the service issues for each request with their plans and
execution times, `--profile` records py-spy of the signal and storage services during one more pass:

    .venv/bin/python bench/bench_scale.py --size small --signals 800000 --heavy-signals 200000 \
        --only lists --samples 200 [--explain /tmp/lists.json] [--profile /tmp/lists]

Only ingest, to tell the database's size from the server's state: the empty database's ingest, the seed,
ingest right after it, a CHECKPOINT, then ingest again, --repeats times each:

    .venv/bin/python bench/bench_scale.py --size full --only ingest --repeats 3

Retention alone, with more screenshots due (seed, the seeded ingest as the idle figure, bytes, pruning,
retention):

    .venv/bin/python bench/bench_scale.py --size small --only retention --free-share 0.5 --ingest-seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from google.protobuf import timestamp_pb2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ingest import BODY, CpuMeter, run_plan
from harness import Stack, print_json, unlimited_plans_env

from alerts.embedded import postgres_client
from apidevs.alerts.v1 import (
    resources_pb2,
    signal_service_pb2,
    signal_service_pb2_grpc,
    user_service_pb2,
    user_service_pb2_grpc,
)
from mesh.grpc import open_channel

SIZES = {
    "small": {
        "signals": 200_000,
        "users": 100,
        "heavy_users": 3,
        "heavy_signals": 20_000,
        "ingest_seconds": 10,
    },
    "full": {
        "signals": 10_000_000,
        "users": 1000,
        "heavy_users": 5,
        "heavy_signals": 200_000,
        "ingest_seconds": 60,
    },
}
INGEST_RATE = 300
REPEATS = 40
PAGE_SIZE = 20
DEEP_PAGE = 100
REPLAY_EVENTS = 100_000
REPLAY_EVENTS_PER_MESSAGE = 1000
# EXPLAIN (ANALYZE, BUFFERS) runs of each ListSignals statement (--only lists --explain).
EXPLAIN_RUNS = 9
# Seconds of unmeasured ingest after the signal service's restart that starts a retention pass.
RESTART_WARMUP = 3
FREE_DAYS = 30  # the free plan's screenshot retention (SignalSettings.screenshot_retention_days)
# `--only retention` first expires the free screenshots older than this with no other load.
ALONE_FREE_DAYS = 180
# --only replay's kinds of replay: max_events_per_message, omit_screenshot_urls.
REPLAY_KINDS = {
    "batched": (REPLAY_EVENTS_PER_MESSAGE, False),
    "batched_without_urls": (REPLAY_EVENTS_PER_MESSAGE, True),
    "single": (0, False),
}
FREE_SHARE = 0.12  # light users on the free plan, whose screenshots older than 30 days are due to expire
TICKERS = [f"BINANCE:COIN{index}USDT" for index in range(50)]
INDICATORS = [f"Indicator {index} [APIDEVS]" for index in range(10)]
SIGNAL_TYPES = ["Divergencia Alcista", "Divergencia Bajista", "Buy", "Sell", "Oversold", "Overbought"]
PY_SPY = Path(sys.executable).with_name("py-spy")


async def connect(dsn: str) -> asyncpg.Connection:
    """A connection, waiting out a full server: on a PostgreSQL shared with other test runs, a moment of
    max_connections should not cost a run of many minutes."""
    for _ in range(60):
        try:
            return await asyncpg.connect(dsn)
        except asyncpg.TooManyConnectionsError:
            await asyncio.sleep(2)
    return await asyncpg.connect(dsn)


@contextlib.asynccontextmanager
async def connected(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """connect(), closed on the way out."""
    connection = await connect(dsn)
    try:
        yield connection
    finally:
        await connection.close()


# What PostgreSQL's checkpointer and WAL did: counters read before and after each ingest window.
SERVER_COUNTERS = """
SELECT pg_current_wal_lsn()::text AS wal_position,
       b.checkpoints_timed + b.checkpoints_req AS checkpoints, b.checkpoints_req AS checkpoints_requested,
       b.buffers_checkpoint, b.buffers_backend, b.buffers_backend_fsync,
       b.checkpoint_write_time, b.checkpoint_sync_time,
       w.wal_records, w.wal_fpi, w.wal_bytes::bigint AS wal_bytes, w.wal_sync, w.wal_buffers_full
FROM pg_stat_bgwriter b, pg_stat_wal w
"""
# Once a second while ingest runs: the WAL position, what the checkpointer waits on (CheckpointWriteDelay
# while a spread checkpoint writes, DataFileSync while it syncs, CheckpointerMain when idle) and how many
# autovacuum workers run.
SERVER_MOMENT = """
SELECT pg_current_wal_lsn() - '0/0'::pg_lsn AS wal_position,
       (SELECT coalesce(wait_event, 'running') FROM pg_stat_activity WHERE backend_type = 'checkpointer')
           AS checkpointer,
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker') AS autovacuum_workers
"""
# An ingest second whose slowest answer took longer than this is listed in the timeline.
SLOW_SECOND_MS = 50.0


# The relations whose pages the WAL between two positions carried as full-page images, by count: which
# pages a window's writes touched for the first time since a checkpoint (pg_walinspect, superuser).
IMAGES_BY_RELATION = r"""
SELECT coalesce(c.relname, 'relfilenode ' || images.node) AS relation, count(*) AS images
FROM (
    SELECT (regexp_matches(block_ref, 'rel \d+/' || (SELECT oid FROM pg_database
                                                       WHERE datname = current_database())
                                      || '/(\d+) fork \w+ blk \d+ \(FPW\)', 'g'))[1]::oid AS node
    FROM pg_get_wal_records_info($1::text::pg_lsn, $2::text::pg_lsn)
    WHERE fpi_length > 0
) images
LEFT JOIN pg_class c ON c.relfilenode = images.node
GROUP BY 1 ORDER BY 2 DESC LIMIT 12
"""


async def images_by_relation(dsn: str, start: str, end: str) -> dict[str, int]:
    async with connected(dsn) as connection:
        await connection.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        rows = await connection.fetch(IMAGES_BY_RELATION, start, end)
    return {row["relation"]: row["images"] for row in rows}


async def server_counters(dsn: str) -> tuple[str, dict[str, int]]:
    """The WAL's position now, and SERVER_COUNTERS' figures."""
    async with connected(dsn) as connection:
        row = await connection.fetchrow(SERVER_COUNTERS)
    return row["wal_position"], {name: int(value) for name, value in row.items() if name != "wal_position"}


def counters_between(before: dict[str, int], after: dict[str, int]) -> dict[str, Any]:
    """The window's checkpoints, WAL and full-page images (the share of WAL records that carried one)."""
    moved = {name: after[name] - before[name] for name in before}
    return {
        **moved,
        "wal_mb": round(moved.pop("wal_bytes") / 2**20, 1),
        "fpi_share": round(moved["wal_fpi"] / max(moved["wal_records"], 1), 3),
    }


class ServerTimeline:
    """Samples SERVER_MOMENT once a second until stopped; `seconds()` joins them to a load's samples."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.moments: list[tuple[float, int, str, int]] = []
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        async with connected(self.dsn) as connection:
            while True:
                row = await connection.fetchrow(SERVER_MOMENT)
                self.moments.append(
                    (
                        time.perf_counter(),
                        int(row["wal_position"]),
                        row["checkpointer"],
                        row["autovacuum_workers"],
                    )
                )
                await asyncio.sleep(1)

    def start(self) -> None:
        self._task = asyncio.create_task(self._sample())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def seconds(self, load_started: float, samples: list[list[Any]]) -> dict[str, Any]:
        """Per second of the load: answers, the slowest, WAL written, the checkpointer's state and the
        autovacuum workers; every second is counted by checkpointer state, and the slow ones are listed."""
        by_second: dict[int, list[float]] = {}
        for offset, latency_ms, _status in samples:
            by_second.setdefault(int(offset), []).append(latency_ms)
        rows: list[dict[str, Any]] = []
        for second, latencies in sorted(by_second.items()):
            moment = load_started + second
            within = [m for m in self.moments if moment <= m[0] < moment + 1] or [
                min(self.moments, key=lambda m: abs(m[0] - moment))
            ]
            previous = [m for m in self.moments if m[0] < moment]
            wal_mb = (within[-1][1] - previous[-1][1]) / 2**20 if previous else 0.0
            rows.append(
                {
                    "second": second,
                    "answers": len(latencies),
                    "slowest_ms": round(max(latencies), 1),
                    "over_50_ms": sum(latency > SLOW_SECOND_MS for latency in latencies),
                    "wal_mb": round(wal_mb, 1),
                    "checkpointer": within[-1][2],
                    "autovacuum_workers": within[-1][3],
                }
            )
        states: dict[str, dict[str, int]] = {}
        for row in rows:
            state = states.setdefault(row["checkpointer"], {"seconds": 0, "slow_seconds": 0, "over_50_ms": 0})
            state["seconds"] += 1
            state["slow_seconds"] += row["slowest_ms"] > SLOW_SECOND_MS
            state["over_50_ms"] += row["over_50_ms"]
        return {
            "by_checkpointer_state": states,
            "slow_seconds": [r for r in rows if r["slowest_ms"] > SLOW_SECOND_MS],
        }


def cpu_seconds() -> dict[str, float]:
    """CPU seconds used so far by this process ("client") and by each service it started, by service: on a
    shared machine, CPU per event says what a throughput figure cannot."""
    own = psutil.Process()
    used = {"client": sum(own.cpu_times()[:2])}
    for child in own.children(recursive=True):
        try:
            arguments = child.cmdline()
            times = child.cpu_times()
        except psutil.Error:
            continue
        if "serve" in arguments[:-1]:
            role = arguments[arguments.index("serve") + 1]
            used[role] = used.get(role, 0.0) + times.user + times.system
    return used


def summarize(values_ms: list[float]) -> dict[str, float]:
    ordered = sorted(values_ms)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
        "n": len(ordered),
    }


async def timed(call: Callable[[], Awaitable[Any]], repeats: int = REPEATS) -> dict[str, float]:
    await call()  # warm the plan cache and the connection
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    return summarize(samples)


def stamp(moment: datetime) -> timestamp_pb2.Timestamp:
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(moment)
    return message


class Scale:
    def __init__(self, stack: Stack, options: argparse.Namespace) -> None:
        self.stack = stack
        self.options = options
        self.channel = open_channel(stack.signal_addr, stack.key)
        self.signals = signal_service_pb2_grpc.SignalServiceStub(self.channel)
        self.users = user_service_pb2_grpc.UserServiceStub(self.channel)
        self.heavy = ""
        self.light = ""
        self.ingest_urls: list[str] = []

    async def create_users(self) -> None:
        """The two measured users, and ten users that take the ingest load."""
        created = [
            await self.users.CreateUser(
                user_service_pb2.CreateUserRequest(plan=resources_pb2.PLAN_PREMIUM, default_chart_id="scale")
            )
            for _ in range(12)
        ]
        self.heavy, self.light = created[0].user.user_id, created[1].user.user_id
        self.ingest_urls = [user.webhook_url for user in created[2:]]

    # ---- measurements
    def ingest(self, seconds: int, *, samples: bool = False) -> dict[str, Any]:
        plan = {
            "urls": self.ingest_urls,
            "rate": INGEST_RATE,
            "duration": seconds,
            "connections": 64,
            "timeout": 10,
            "body": BODY.format(run=uuid.uuid4().hex[:8]),
            "samples": samples,
        }
        result = run_plan("loadgen.py", plan)
        return {"rate": INGEST_RATE, "seconds": seconds, **result}

    async def observed_ingest(self, seconds: int, *, images: bool = False) -> dict[str, Any]:
        """Ingest at INGEST_RATE for `seconds`, with what PostgreSQL's checkpointer and WAL did meanwhile
        (with `images`, also the relations whose pages its WAL carried as full-page images)."""
        dsn = self.stack.dsn
        started_at, before = await server_counters(dsn)
        timeline = ServerTimeline(dsn)
        timeline.start()
        result = await asyncio.to_thread(self.ingest, seconds, samples=True)
        # The load's sample offsets count from its first send, wall_s before its last answer came back.
        load_started = time.perf_counter() - result["wall_s"]
        await timeline.stop()
        ended_at, after = await server_counters(dsn)
        samples = result.pop("samples")
        result["server"] = {
            **counters_between(before, after),
            "timeline": timeline.seconds(load_started, samples),
        }
        if images:
            result["server"]["images_by_relation"] = await images_by_relation(dsn, started_at, ended_at)
        return result

    async def list_requests(self, user_id: str) -> dict[str, signal_service_pb2.ListSignalsRequest]:
        """The measured ListSignals requests by name: the first page, each filter, and page DEEP_PAGE by
        page token (when the user has that many pages)."""
        now = datetime.now(UTC)
        filters: dict[str, dict[str, Any]] = {
            "first_page": {},
            "ticker": {"ticker": TICKERS[7]},
            "indicator": {"indicator": INDICATORS[3]},
            "signal_type": {"signal_type": SIGNAL_TYPES[4]},
            "result": {"result": resources_pb2.SIGNAL_RESULT_WIN},
            "date_range": {
                "created_after": stamp(now - timedelta(days=190)),
                "created_before": stamp(now - timedelta(days=183)),
            },
        }
        requests = {
            name: signal_service_pb2.ListSignalsRequest(user_id=user_id, page_size=PAGE_SIZE, **fields)
            for name, fields in filters.items()
        }
        token = ""
        for _ in range(DEEP_PAGE - 1):
            page = await self.signals.ListSignals(
                signal_service_pb2.ListSignalsRequest(user_id=user_id, page_size=PAGE_SIZE, page_token=token)
            )
            token = page.next_page_token
            if not token:
                break
        if token:
            requests[f"page_{DEEP_PAGE}"] = signal_service_pb2.ListSignalsRequest(
                user_id=user_id, page_size=PAGE_SIZE, page_token=token
            )
        return requests

    async def lists(self, user_id: str, repeats: int = REPEATS) -> dict[str, Any]:
        return {
            name: await timed(lambda request=request: self.signals.ListSignals(request), repeats)
            for name, request in (await self.list_requests(user_id)).items()
        }

    async def stats(self, user_id: str, repeats: int = REPEATS) -> dict[str, Any]:
        request = signal_service_pb2.GetUserStatsRequest(user_id=user_id)
        return await timed(lambda: self.signals.GetUserStats(request), repeats)

    async def list_figures(self, samples: int, profile: Path | None, explain: Path | None) -> dict[str, Any]:
        """--only lists: ListSignals for the heavy and the light user and GetUserStats, `samples` calls
        each; with `profile`, one more pass of the heavy user's while py-spy records the signal and storage
        services; with `explain`, each request's statements as the service issues them, explained."""
        figures: dict[str, Any] = {
            "list_heavy": await self.lists(self.heavy, samples),
            "list_light": await self.lists(self.light, samples),
            "stats_heavy": await self.stats(self.heavy, samples),
        }
        if profile:
            pids = {name: self.stack.processes[name].process for name in ("signal", "storage")}
            requests = await self.list_requests(self.heavy)
            with recording(pids, profile):
                for request in requests.values():
                    for _ in range(samples):
                        await self.signals.ListSignals(request)
        if explain:
            plans = {
                user: await explained_statements(self.stack.dsn, await self.list_requests(user_id))
                for user, user_id in (("heavy", self.heavy), ("light", self.light))
            }
            await asyncio.to_thread(explain.write_text, json.dumps(plans, indent=1))
            figures["sql_ms"] = {
                user: {
                    name: [statement["execution_ms"] for statement in statements]
                    for name, statements in by_request.items()
                }
                for user, by_request in plans.items()
            }
        return figures

    async def replay(self, user_id: str, *, per_message: int, omit_urls: bool = False) -> dict[str, Any]:
        """Events/s of a replay from REPLAY_EVENTS back until live; `per_message` 0 is one event per
        message (a client that does not ask for batches), else SubscribeSignalsRequest.max_events_per_message;
        `omit_urls` asks for no screenshot URLs (SubscribeSignalsRequest.omit_screenshot_urls).
        """
        async with connected(self.stack.dsn) as connection:
            newest = await connection.fetchval(
                "SELECT event_seq FROM users WHERE id = $1", uuid.UUID(user_id)
            )
        start = max(0, newest - REPLAY_EVENTS)
        wanted = newest - start
        if wanted == 0:
            return {"events": 0}
        call = self.signals.SubscribeSignals(
            signal_service_pb2.SubscribeSignalsRequest(
                user_id=user_id,
                after_cursor=str(start),
                max_events_per_message=per_message,
                # Only when asked: the other kinds run against a tree from before the field too (before and
                # after figures in one sitting).
                **({"omit_screenshot_urls": True} if omit_urls else {}),
            )
        )
        cpu_before = cpu_seconds()
        started = time.perf_counter()
        received = messages = 0
        async for message in call:
            received += len(message.events) if per_message else 1
            messages += 1
            if received >= wanted:
                break
        elapsed = time.perf_counter() - started
        cpu_after = cpu_seconds()
        call.cancel()
        return {
            "events": received,
            "messages": messages,
            "seconds": round(elapsed, 2),
            "events_per_s": round(received / elapsed),
            # What a core could do: events/s if the process that spends most per event had one to itself.
            "cpu_ms_per_1000_events": {
                role: round((cpu_after[role] - cpu_before.get(role, 0.0)) * 1e6 / received, 1)
                for role in cpu_after
            },
        }

    async def replays(self, kinds: list[str], repeats: int, profile: Path | None) -> dict[str, Any]:
        """The heavy user's replays only, each kind `repeats` times, with the median of each figure; with
        `profile`, one more of each kind while py-spy records the signal and storage services."""
        pids = {name: self.stack.processes[name].process for name in ("signal", "storage")}
        figures: dict[str, Any] = {}
        for name in kinds:
            per_message, omit_urls = REPLAY_KINDS[name]
            runs = [
                await self.replay(self.heavy, per_message=per_message, omit_urls=omit_urls)
                for _ in range(repeats)
            ]
            figures[name] = {"median": median_run(runs), "runs": runs}
            if profile:
                # One more, apart: the sampling costs the processes some CPU of their own.
                with recording(pids, Path(f"{profile}.{name}")):
                    figures[name]["profiled"] = await self.replay(
                        self.heavy, per_message=per_message, omit_urls=omit_urls
                    )
        return figures

    async def measure(self, ingest_seconds: int) -> dict[str, Any]:
        return {
            "ingest": await self.observed_ingest(ingest_seconds),
            "list_heavy": await self.lists(self.heavy),
            "list_light": await self.lists(self.light),
            "stats_heavy": await self.stats(self.heavy),
            "replay_heavy": await self.replay(self.heavy, per_message=REPLAY_EVENTS_PER_MESSAGE),
            "replay_heavy_single": await self.replay(self.heavy, per_message=0),
        }

    async def under_ingest(
        self, work: Callable[[], Awaitable[None]], seconds: int, *, warmup: int = 0
    ) -> dict[str, Any]:
        """Runs `work` while the ingest load runs (after `warmup` seconds of the same load, not measured:
        a restarted service's first requests measure its start); its duration and the load's figures."""
        started = time.perf_counter()
        working = asyncio.ensure_future(work())
        if warmup:
            await asyncio.to_thread(self.ingest, warmup)
        ingest = await self.observed_ingest(seconds)
        await working
        duration = time.perf_counter() - started
        return {
            "duration_s": round(duration, 1),
            # The load ran inside the work: its figures are the work's neighbour's, not partly idle.
            "work_outlasted_load": duration > warmup + seconds,
            "ingest_meanwhile": ingest,
        }


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each figure over `runs` (CPU per process too)."""
    median = {name: statistics.median(run[name] for run in runs) for name in ("events_per_s", "seconds")}
    median["cpu_ms_per_1000_events"] = {
        role: round(statistics.median(run["cpu_ms_per_1000_events"][role] for run in runs), 1)
        for role in runs[0]["cpu_ms_per_1000_events"]
    }
    return median


@contextlib.contextmanager
def recording(processes: dict[str, subprocess.Popen[bytes] | None], profile: Path | None) -> Iterator[None]:
    """py-spy sampling each process while the block runs, into `profile`.<process>.txt (collapsed stacks,
    GIL-holding samples only: CPU rather than waiting); nothing when `profile` is None."""
    if profile is None:
        yield
        return
    recorders = []
    for name, process in processes.items():
        assert process is not None
        spy = [str(PY_SPY), "record", "--pid", str(process.pid), "--format", "raw", "--gil", "--nonblocking"]
        output = f"{profile}.{name}.txt"
        recorders.append(
            subprocess.Popen(
                [*spy, "--rate", "250", "--output", output],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    try:
        yield
    finally:
        for recorder in recorders:
            # SIGINT: py-spy writes what it sampled and exits.
            recorder.send_signal(2)
        for recorder in recorders:
            recorder.wait(60)


async def explained_statements(
    dsn: str, requests: dict[str, signal_service_pb2.ListSignalsRequest]
) -> dict[str, list[dict[str, Any]]]:
    """Per request, the statements the signal service's SignalReader.list issues for it (through a session or
    on the plain pool), each as PostgreSQL
    runs it for the service: prepared, executed six times (after five, the plan cache may keep a generic
    plan, as it does for the service's prepared statements), then EXPLAIN (ANALYZE, BUFFERS) EXECUTE
    EXPLAIN_RUNS times: the median execution time, the plan of the last run."""
    from sqlalchemy import event

    from signal_service.database import Database, create_engine
    from signal_service.parsing import load_indicator_catalog
    from signal_service.proto_mapping import RESULT_FROM_PROTO, from_timestamp
    from signal_service.signals.repository import SignalFilter
    from signal_service.signals.service import SignalReader

    database = Database(create_engine(dsn.replace("postgresql://", "postgresql+asyncpg://", 1)))
    issued: list[tuple[str, tuple[Any, ...]]] = []

    def capture(connection: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        issued.append((statement, tuple(parameters or ())))

    event.listen(database.engine.sync_engine, "before_cursor_execute", capture)
    # And what it runs on the plain pool (Database.connection), where there is no such event.
    plain_connection = database.connection

    def logged(query: Any) -> None:
        issued.append((query.query, tuple(query.args or ())))

    @contextlib.asynccontextmanager
    async def logged_connection() -> Any:
        async with plain_connection() as acquired:
            acquired.add_query_logger(logged)
            try:
                yield acquired
            finally:
                acquired.remove_query_logger(logged)

    database.connection = logged_connection  # type: ignore[method-assign]
    reader = SignalReader(database, load_indicator_catalog())
    explained: dict[str, list[dict[str, Any]]] = {}
    try:
        async with connected(dsn) as connection:
            for name, request in requests.items():
                issued.clear()
                where = SignalFilter(
                    user_id=uuid.UUID(request.user_id),
                    ticker=request.ticker or None,
                    indicator=request.indicator or None,
                    signal_type=request.signal_type or None,
                    result=RESULT_FROM_PROTO.get(request.result),
                    created_after=from_timestamp(request.created_after, request.HasField("created_after")),
                    created_before=from_timestamp(request.created_before, request.HasField("created_before")),
                )
                await reader.list(where, size=request.page_size, page_token=request.page_token)
                explained[name] = [
                    await explain_prepared(connection, statement, parameters)
                    for statement, parameters in issued
                ]
    finally:
        await database.dispose()
    return explained


async def explain_prepared(
    connection: asyncpg.Connection, statement: str, parameters: tuple[Any, ...]
) -> dict[str, Any]:
    await connection.execute(f"PREPARE measured AS {statement}")
    try:
        arguments = ", ".join(sql_literal(value) for value in parameters)
        execute = f"EXECUTE measured({arguments})" if parameters else "EXECUTE measured"
        for _ in range(6):
            await connection.execute(execute)
        times, plan = [], ""
        for _ in range(EXPLAIN_RUNS):
            lines = [row[0] for row in await connection.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {execute}")]
            plan = "\n".join(lines)
            times.append(float(lines[-1].split(":")[1].split()[0]))
    finally:
        await connection.execute("DEALLOCATE measured")
    return {
        "statement": statement,
        "parameters": [str(value) for value in parameters],
        "execution_ms": round(statistics.median(times), 3),
        "plan": plan,
    }


def sql_literal(value: Any) -> str:
    """A parameter as an SQL literal of unknown type (PostgreSQL gives it the prepared parameter's type)."""
    if isinstance(value, datetime):
        value = value.isoformat()
    if isinstance(value, list):
        value = "{" + ",".join(str(item) for item in value) + "}"
    return "'" + str(value).replace("'", "''") + "'"


async def seed(
    dsn: str, size: dict[str, int], heavy_ids: list[str], light_ids: list[str], free_share: float
) -> dict[str, Any]:
    """Seeds users and their signals server-side; returns the counts and how long it took.

    Rows go in oldest first across all users, as ingest writes them: a heap page holds the signals of the
    same moment from many users, not a run of one user's, which is what a retention batch (one user's
    oldest) and the room fillfactor leaves on each page meet in production."""
    users, total = size["users"], size["signals"]
    heavy_count, heavy_signals = size["heavy_users"], size["heavy_signals"]
    light_signals = (total - heavy_count * heavy_signals) // max(1, users - heavy_count)
    started = time.perf_counter()
    async with connected(dsn) as connection:
        await connection.execute("SET synchronous_commit = off")
        # Triggers off while seeding (foreign-key checks, and the per-user counters, recounted at the end as
        # migration 0007_scale does): one counter upsert per seeded row would dominate the seed's time.
        await connection.execute("SET session_replication_role = replica")
        # The plan: which user gets how many signals. Two created users join it: the heaviest, a light one.
        await connection.execute("CREATE TEMP TABLE seed_plan (user_id uuid, signals int, plan text)")
        other_heavy = heavy_count - 1
        other_light = users - heavy_count - 1
        await connection.execute(
            """
            INSERT INTO users (id, plan, webhook_token_hash, webhook_enabled, signals_quota, signals_used,
                               quota_reset_at, event_seq)
            SELECT gen_random_uuid(), 'premium', md5(random()::text || g), true, 100000000, 0,
                   now() + interval '30 days', 0
            FROM generate_series(1, $1) g
            """,
            other_heavy + other_light,
        )
        await connection.execute(
            """
            INSERT INTO user_config (user_id, default_chart_id)
            SELECT id, 'scale' FROM users WHERE id NOT IN (SELECT user_id FROM user_config)
            """
        )
        await connection.execute(
            """
            INSERT INTO seed_plan
            SELECT id, CASE WHEN n <= $1::int THEN $2::int ELSE $3::int END,
                   CASE WHEN n > $1::int AND random() < $4::float8 THEN 'free' ELSE 'premium' END
            FROM (SELECT id, row_number() OVER (ORDER BY created_at, id) AS n FROM users
                  WHERE id <> ALL($5::uuid[])) numbered
            """,
            other_heavy,
            heavy_signals,
            light_signals,
            free_share,
            [uuid.UUID(value) for value in (*heavy_ids, *light_ids)],
        )
        await connection.execute(
            "INSERT INTO seed_plan VALUES ($1::uuid, $2::int, 'premium'), ($3::uuid, $4::int, 'premium')",
            uuid.UUID(heavy_ids[0]),
            heavy_signals,
            uuid.UUID(light_ids[0]),
            light_signals,
        )
        await connection.execute("UPDATE users u SET plan = p.plan FROM seed_plan p WHERE u.id = p.user_id")
        await connection.execute(
            """
            CREATE TEMP TABLE seed_signals AS
            SELECT gen_random_uuid() AS id, p.user_id, g AS n, p.signals AS total,
                   now() - (g::float8 / p.signals) * interval '360 days' AS created_at
            FROM seed_plan p, generate_series(1, p.signals) g
            """
        )
        await connection.execute(
            """
            INSERT INTO signals (id, user_id, chart_id, indicator, ticker, exchange, symbol, price,
                                 signal_type, interval, alert_time, parse_status, raw_body, content_type,
                                 body_sha256, source_ip, result, profit_loss, screenshot_status, created_at,
                                 updated_at)
            SELECT s.id, s.user_id, 'scale', ($1::text[])[1 + s.n % 10], ($2::text[])[1 + s.n % 50],
                   'BINANCE', 'COIN' || (s.n % 50) || 'USDT', round((100 + s.n % 1000)::numeric + 0.25, 2),
                   ($3::text[])[1 + s.n % 6], '15', s.created_at, 'complete', b.body, 'text/plain',
                   sha256(b.body), '203.0.113.7',
                   CASE WHEN s.n % 20 < 3 THEN 'win' WHEN s.n % 20 < 5 THEN 'loss'
                        WHEN s.n % 20 = 5 THEN 'skip' ELSE 'pending' END,
                   CASE WHEN s.n % 20 < 5 THEN (s.n % 200 - 100)::numeric END,
                   'completed', s.created_at, s.created_at
            FROM seed_signals s,
                 LATERAL (SELECT convert_to(
                     '🚨 ' || ($1::text[])[1 + s.n % 10] || E'\\n📈 Señal: Buy\\n🪙 Ticker: '
                     || ($2::text[])[1 + s.n % 50] || E'\\n💰 Precio: $' || (100 + s.n % 1000)
                     || E'.25\\n⏱️ Timeframe: 15\\nid: ' || s.id, 'UTF8') AS body) b
            ORDER BY s.created_at
            """,
            INDICATORS,
            TICKERS,
            SIGNAL_TYPES,
        )
        await connection.execute(
            """
            INSERT INTO screenshots (signal_id, user_id, status, object_key, size_bytes, width, height,
                                     duration_ms, attempts, completed_at, created_at, updated_at)
            SELECT id, user_id, 'completed',
                   'screenshots/' || user_id || '/' || to_char(created_at, 'YYYY/MM/DD') || '/' || id
                   || '.png',
                   120000, 1228, 682, 900, 1, created_at + interval '20 seconds', created_at, created_at
            FROM seed_signals ORDER BY created_at
            """
        )
        # Events: 'created' for each signal, 'outcome_updated' for the resolved ones, in time order.
        await connection.execute(
            """
            INSERT INTO signal_events (user_id, seq, type, signal_id, created_at)
            SELECT e.user_id,
                   u.event_seq + row_number() OVER (PARTITION BY e.user_id ORDER BY e.created_at, e.kind),
                   e.type, e.id, e.created_at
            FROM (SELECT user_id, id, created_at, 0 AS kind, 'created' AS type FROM seed_signals
                  UNION ALL
                  SELECT user_id, id, created_at + interval '1 hour', 1, 'outcome_updated'
                  FROM seed_signals WHERE n % 20 < 6) e
            JOIN users u ON u.id = e.user_id
            """
        )
        await connection.execute(
            """
            UPDATE users u SET event_seq = e.seq
            FROM (SELECT user_id, max(seq) AS seq FROM signal_events GROUP BY user_id) e
            WHERE u.id = e.user_id
            """
        )
        # The monthly audit_logs partitions a year of running leaves behind (the retention loop creates each
        # month's ahead of time), so the seeded rows land in their months as ingest's would.
        await connection.execute("SELECT ensure_audit_log_partitions(now() - interval '361 days', now())")
        # As ingest_webhooks_v6.sql writes them: an accepted call's audit row keeps the body's hash and size,
        # its signal the body.
        await connection.execute(
            """
            INSERT INTO audit_logs (created_at, user_id, signal_id, request_id, source_ip, user_agent,
                                    outcome, latency_ms, body_sha256, body_size, content_type)
            SELECT s.created_at, s.user_id, s.id, md5(s.id::text), '203.0.113.7', 'Go-http-client/1.1',
                   'accepted', 4.2, encode(stored.body_sha256, 'hex'), octet_length(stored.raw_body),
                   'text/plain'
            FROM seed_signals s JOIN signals stored ON stored.id = s.id
            ORDER BY s.created_at
            """
        )
        # Outbox history: the relay deletes what it sent, so a year leaves only the recent failures behind.
        await connection.execute(
            """
            INSERT INTO outbox (queue_name, actor_name, args, options, attempts, last_error, available_at,
                                created_at)
            SELECT 'capture.premium', 'capture_screenshot_premium', jsonb_build_array(id::text),
                   '{}'::jsonb, 3, 'redis unavailable', now() + interval '1 day', created_at
            FROM seed_signals WHERE n % 10000 = 0
            """
        )
        # Notification deliveries: half the signals' users have a channel linked; nearly all delivered, a
        # few failed for good or dead, as a year leaves the ledger (nothing prunes it).
        await connection.execute(
            """
            INSERT INTO notification_deliveries (signal_id, user_id, channel, kind, status, attempts,
                                                 provider_message_id, due_since, delivered_at, created_at,
                                                 updated_at)
            SELECT id, user_id, 'telegram', 'alert',
                   CASE n % 2000 WHEN 2 THEN 'failed' WHEN 4 THEN 'dead' ELSE 'delivered' END, 1,
                   (n % 100000)::text, created_at, created_at + interval '1 second', created_at,
                   created_at + interval '1 second'
            FROM seed_signals WHERE n % 2 = 0 ORDER BY created_at
            """
        )
        await connection.execute("DROP TABLE seed_signals")
        await connection.execute("DELETE FROM user_signal_counts")
        await connection.execute(
            """
            INSERT INTO user_signal_counts (user_id, month, signals, wins, losses, screenshots_pending)
            SELECT user_id, date_trunc('month', created_at, 'UTC')::date, count(*),
                   count(*) FILTER (WHERE result = 'win'), count(*) FILTER (WHERE result = 'loss'),
                   count(*) FILTER (WHERE screenshot_status IN ('pending', 'processing'))
            FROM signals GROUP BY 1, 2
            """
        )
        await connection.execute(
            """
            INSERT INTO user_signal_counts AS c (user_id, month, storage_bytes, storage_objects)
            SELECT user_id, date_trunc('month', created_at, 'UTC')::date, coalesce(sum(size_bytes), 0),
                   count(*)
            FROM screenshots WHERE status = 'completed' GROUP BY 1, 2
            ON CONFLICT (user_id, month) DO UPDATE
            SET storage_bytes = EXCLUDED.storage_bytes, storage_objects = EXCLUDED.storage_objects
            """
        )
        await connection.execute("SET session_replication_role = origin")
        await connection.execute("VACUUM ANALYZE")
        expiring = await connection.fetchval(
            """
            SELECT count(*) FROM screenshots s JOIN users u ON u.id = s.user_id
            WHERE u.plan = 'free' AND s.status = 'completed' AND s.completed_at < now() - interval '30 days'
            """
        )
        audit_due = await connection.fetchval(
            "SELECT count(*) FROM audit_logs WHERE created_at < now() - interval '90 days'"
        )
        counts = await connection.fetchrow(
            "SELECT (SELECT count(*) FROM signals) AS signals, (SELECT count(*) FROM users) AS users,"
            " (SELECT count(*) FROM signal_events) AS events"
        )
    return {
        **dict(counts),
        "heavy_signals": heavy_signals,
        "light_signals": light_signals,
        "screenshots_due_to_expire": expiring,
        "audit_rows_due": audit_due,
        "seconds": round(time.perf_counter() - started, 1),
    }


async def settle(dsn: str) -> dict[str, Any]:
    """Writes out what the seed left dirty, as a database filled over a year has long written it: a
    CHECKPOINT, then the kernel's write-back of the files it wrote; how long each took."""
    async with connected(dsn) as connection:
        started = time.perf_counter()
        await connection.execute("CHECKPOINT")
        checkpointed = time.perf_counter()
    await asyncio.to_thread(os.sync)
    return {
        "checkpoint_s": round(checkpointed - started, 1),
        "sync_s": round(time.perf_counter() - checkpointed, 1),
    }


async def table_bytes(dsn: str) -> dict[str, Any]:
    async with connected(dsn) as connection:
        signals = await connection.fetchval("SELECT count(*) FROM signals")
        rows = await connection.fetch(
            """
            SELECT coalesce(pg_partition_root(c.oid)::text, c.relname) AS name,
                   sum(pg_table_size(c.oid))::bigint AS table_bytes,
                   sum(pg_indexes_size(c.oid))::bigint AS index_bytes
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public' AND c.relkind = 'r'
            GROUP BY 1 ORDER BY sum(pg_total_relation_size(c.oid)) DESC
            """
        )
    tables = {
        row["name"]: {
            "table_bytes_per_signal": round(row["table_bytes"] / signals, 1),
            "index_bytes_per_signal": round(row["index_bytes"] / signals, 1),
        }
        for row in rows
    }
    total = sum(row["table_bytes"] + row["index_bytes"] for row in rows)
    return {
        "signals": signals,
        "total_bytes": total,
        "bytes_per_signal": round(total / signals, 1),
        "tables": tables,
    }


def dump_and_restore(stack: Stack) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch:
        dump = Path(scratch) / "alerts.dump"
        started = time.perf_counter()
        subprocess.run(
            [postgres_client("pg_dump"), "--format=custom", "--no-owner", f"--file={dump}", stack.dsn],
            check=True,
        )
        dumped = time.perf_counter() - started
        with stack.scratch_database("restore") as restore_dsn:
            started = time.perf_counter()
            subprocess.run(
                [
                    postgres_client("pg_restore"),
                    "--no-owner",
                    "--exit-on-error",
                    "--jobs=2",
                    f"--dbname={restore_dsn}",
                    str(dump),
                ],
                check=True,
            )
            restored = time.perf_counter() - started
        return {
            "dump_s": round(dumped, 1),
            "dump_bytes": dump.stat().st_size,
            "restore_s": round(restored, 1),
        }


async def updates(dsn: str) -> dict[str, dict[str, int]]:
    """Rows updated in signals and screenshots so far, and how many of them heap-only (HOT: the new version
    on the same page, no index entry written)."""
    async with connected(dsn) as connection:
        rows = await connection.fetch(
            "SELECT relname, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables"
            " WHERE relname IN ('signals', 'screenshots')"
        )
    return {row["relname"]: {"updated": row["n_tup_upd"], "hot": row["n_tup_hot_upd"]} for row in rows}


async def updates_since(dsn: str, before: dict[str, dict[str, int]], at_least: int) -> dict[str, Any]:
    """The updates since `before`, once signals counts `at_least` more (a backend reports its counts when
    idle, up to about ten seconds late) or after 15 s."""
    deadline = time.monotonic() + 15
    while True:
        now = await updates(dsn)
        grown = now["signals"]["updated"] - before["signals"]["updated"]
        if grown >= at_least or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    return updates_between(before, now)


def updates_between(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> dict[str, Any]:
    """Per table, the rows updated from `before` to `after`, how many heap-only, and their share."""
    figures: dict[str, Any] = {}
    for table, counts in after.items():
        updated = counts["updated"] - before[table]["updated"]
        hot = counts["hot"] - before[table]["hot"]
        figures[table] = {
            "updated": updated,
            "hot": hot,
            "hot_share": round(hot / updated, 3) if updated else None,
        }
    return figures


async def index_scans(dsn: str) -> dict[str, int]:
    """Scans of each index of signals and screenshots since the database was made: an index no path of the
    run read shows 0 (every path the bench measures ran by then, ingest and retention included)."""
    async with connected(dsn) as connection:
        rows = await connection.fetch(
            "SELECT indexrelname, idx_scan FROM pg_stat_user_indexes"
            " WHERE relname IN ('signals', 'screenshots') ORDER BY relname, indexrelname"
        )
    return {row["indexrelname"]: row["idx_scan"] for row in rows}


async def wait_for_retention(dsn: str, free_days: int, restarted_at: datetime, patience: float) -> None:
    """Waits until no free screenshot is left that was due when the signal service restarted: the pass
    that start began fixes its cutoff then, so one due only later stays, and waiting for it never ends."""
    cutoff = restarted_at - timedelta(days=free_days)
    done = await wait_until(
        dsn,
        f"""SELECT NOT EXISTS (SELECT 1 FROM screenshots s JOIN users u ON u.id = s.user_id
            WHERE u.plan = 'free' AND s.status = 'completed'
            AND s.completed_at < '{cutoff.isoformat()}'::timestamptz)""",  # noqa: S608 (a datetime)
        patience=patience,
    )
    if not done:
        raise RuntimeError(f"retention did not finish within {patience:g} s")


async def expired_screenshots(dsn: str) -> int:
    async with connected(dsn) as connection:
        return int(await connection.fetchval("SELECT count(*) FROM screenshots WHERE status = 'expired'"))


async def retention_alone(stack: Stack, patience: float) -> dict[str, Any]:
    """A pass with no other load, of the free plan's screenshots past ALONE_FREE_DAYS (the rest stay due
    for the pass under load): CPU per 1,000 screenshots of the signal and storage processes and of this
    database's PostgreSQL backends, counted from the restarted service's readiness to the pass's end."""
    assert stack.services is not None
    stack.services.env["ALERTS_SCREENSHOT_RETENTION_DAYS"] = json.dumps({"free": ALONE_FREE_DAYS})
    try:
        updated_before = await updates(stack.dsn)
        restarted_at = datetime.now(UTC)
        await asyncio.to_thread(stack.services.restart, "signal")
    finally:
        del stack.services.env["ALERTS_SCREENSHOT_RETENTION_DAYS"]
    roots = {
        name: process.process.pid
        for name, process in stack.services.processes.items()
        if name in ("signal", "storage") and process.process is not None
    }
    meter = CpuMeter(roots, stack.dsn)
    expired_before = await expired_screenshots(stack.dsn)
    started = time.perf_counter()
    await asyncio.to_thread(meter.__enter__)
    await wait_for_retention(stack.dsn, ALONE_FREE_DAYS, restarted_at, patience)
    await asyncio.to_thread(meter.__exit__, None, None, None)
    seconds = time.perf_counter() - started
    expired = await expired_screenshots(stack.dsn)
    metered = expired - expired_before
    return {
        "screenshots": expired,
        "metered_screenshots": metered,
        "metered_s": round(seconds, 1),
        "per_second": round(metered / max(seconds, 0.1)),
        "cpu_ms_per_1000": {
            role: round(used * 1e6 / metered, 1)
            for role, used in meter.used.items()
            if role != "wall" and metered
        },
        "updates": await updates_since(stack.dsn, updated_before, expired),
    }


async def wait_until(dsn: str, query: str, *, patience: float) -> bool:
    deadline = time.monotonic() + patience
    async with connected(dsn) as connection:
        while time.monotonic() < deadline:
            if await connection.fetchval(query):
                return True
            await asyncio.sleep(1)
        return False


async def main_async(options: argparse.Namespace) -> dict[str, Any]:
    size = dict(SIZES[options.size])
    if options.signals:
        size["signals"] = options.signals
    if options.ingest_seconds:
        size["ingest_seconds"] = options.ingest_seconds
    if options.heavy_signals:
        size["heavy_signals"] = options.heavy_signals
    env = {
        **unlimited_plans_env(),
        # Retention runs once at each start of the signal service; the bench restarts it to measure a pass.
        "ALERTS_RETENTION_INTERVAL_SECONDS": "86400",
        "ALERTS_RETENTION_BATCH_SIZE": "500",
        **dict(setting.split("=", 1) for setting in options.env),
    }
    retention_only = options.only == "retention"
    with tempfile.TemporaryDirectory() as workdir, Stack(Path(workdir), extra_env=env) as stack:
        scale = Scale(stack, options)
        await scale.create_users()
        result: dict[str, Any] = {
            "size": options.size,
            "planned": size,
            "env": options.env,
            "free_share": options.free_share,
            "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
        }
        if options.only == "replay":
            result["seed"] = await seed(stack.dsn, size, [scale.heavy], [scale.light], options.free_share)
            result["load_average"] = [round(value, 2) for value in os.getloadavg()]
            result["replay"] = await scale.replays(options.kinds.split(","), options.repeats, options.profile)
            result["load_average_after"] = [round(value, 2) for value in os.getloadavg()]
            await scale.channel.close()
            return result
        if options.only == "lists":
            result["seed"] = await seed(stack.dsn, size, [scale.heavy], [scale.light], options.free_share)
            result["load_average"] = [round(value, 2) for value in os.getloadavg()]
            result["lists"] = await scale.list_figures(options.samples, options.profile, options.explain)
            result["load_average_after"] = [round(value, 2) for value in os.getloadavg()]
            await scale.channel.close()
            return result
        if options.only == "ingest":
            seconds = size["ingest_seconds"]
            result["empty"] = [
                await scale.observed_ingest(seconds, images=True) for _ in range(options.repeats)
            ]
            result["seed"] = await seed(stack.dsn, size, [scale.heavy], [scale.light], options.free_share)
            result["after_seed"] = await scale.observed_ingest(seconds, images=True)
            result["settle"] = await settle(stack.dsn)
            result["settled"] = [
                await scale.observed_ingest(seconds, images=True) for _ in range(options.repeats)
            ]
            result["load_average_after"] = [round(value, 2) for value in os.getloadavg()]
            await scale.channel.close()
            return result
        if not retention_only:
            result["empty"] = await scale.measure(size["ingest_seconds"])
        result["seed"] = await seed(stack.dsn, size, [scale.heavy], [scale.light], options.free_share)
        result["settle"] = await settle(stack.dsn)
        if retention_only:
            # The idle figure beside which retention's ingest p99 is judged: the same load, seeded, no pass.
            result["seeded"] = {"ingest": await scale.observed_ingest(size["ingest_seconds"])}
        else:
            result["seeded"] = await scale.measure(size["ingest_seconds"])
        result["bytes"] = await table_bytes(stack.dsn)

        async def prune() -> None:
            await asyncio.to_thread(
                subprocess.run,
                [str(Path(sys.executable).parent / "alerts"), "audit", "prune"],
                env=stack.env,
                check=True,
                capture_output=True,
            )

        result["audit_prune"] = await scale.under_ingest(prune, size["ingest_seconds"])

        assert stack.services is not None
        due = result["seed"]["screenshots_due_to_expire"]
        if retention_only:
            # First a pass alone, of the free screenshots past ALONE_FREE_DAYS: its CPU per screenshot.
            result["retention_alone"] = await retention_alone(stack, options.retention_patience)
            due -= result["retention_alone"]["screenshots"]

        # Retention runs at the signal service's start: restart it, then load it while the pass runs.
        updated_before = await updates(stack.dsn)
        restarted, restarted_at = time.perf_counter(), datetime.now(UTC)
        await asyncio.to_thread(stack.services.restart, "signal")

        async def retention() -> None:
            await wait_for_retention(stack.dsn, FREE_DAYS, restarted_at, options.retention_patience)

        result["retention"] = await scale.under_ingest(
            retention, size["ingest_seconds"], warmup=RESTART_WARMUP
        )
        result["retention"]["duration_s"] = round(time.perf_counter() - restarted, 1)
        result["retention"]["screenshots"] = due
        result["retention"]["per_second"] = round(due / max(result["retention"]["duration_s"], 0.1))
        # Every expiry updates its screenshot and its signal; ingest's own updates (users) are not counted.
        result["retention"]["updates"] = await updates_since(stack.dsn, updated_before, due)
        result["index_scans"] = await index_scans(stack.dsn)
        await scale.channel.close()
        if not retention_only:
            result["backup"] = await asyncio.to_thread(dump_and_restore, stack)
    result["load_average_at_end"] = [round(value, 2) for value in os.getloadavg()]
    return result


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("--size", choices=sorted(SIZES), default="full")
    arguments.add_argument("--signals", type=int, default=0, help="override the size's signal count")
    arguments.add_argument("--heavy-signals", type=int, default=0, help="override the heavy users' signals")
    arguments.add_argument("--retention-patience", type=float, default=3600.0, help="seconds")
    arguments.add_argument(
        "--only",
        choices=["all", "retention", "replay", "lists", "ingest"],
        default="all",
        help="retention: seed, then only the seeded ingest, bytes per signal, audit pruning and retention;"
        " replay: seed, then only the heavy user's replays; lists: seed, then only ListSignals (heavy and"
        " light user) and GetUserStats; ingest: the empty database's ingest (--repeats times), seed, ingest"
        " right after the seed, settle (CHECKPOINT), ingest again (--repeats times), each with what"
        " PostgreSQL's checkpointer and WAL did meanwhile and the relations whose pages its WAL carried as"
        " full-page images",
    )
    arguments.add_argument(
        "--free-share",
        type=float,
        default=FREE_SHARE,
        help="share of light users on the free plan, whose screenshots past 30 days are due",
    )
    arguments.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the stack's services, e.g. ALERTS_SWEEP_INTERVAL_SECONDS=86400 to measure without"
        " the capture sweeper (repeatable)",
    )
    arguments.add_argument("--ingest-seconds", type=int, default=0, help="override the size's ingest seconds")
    arguments.add_argument("--repeats", type=int, default=3, help="replays of each kind (--only replay)")
    arguments.add_argument(
        "--kinds", default=",".join(REPLAY_KINDS), help=f"of {', '.join(REPLAY_KINDS)} (--only replay)"
    )
    arguments.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="py-spy output, one file per kind of replay (--only replay) or per service (--only lists)",
    )
    arguments.add_argument(
        "--samples", type=int, default=REPEATS, help="calls of each ListSignals request (--only lists)"
    )
    arguments.add_argument(
        "--explain",
        type=Path,
        default=None,
        help="JSON file of each ListSignals request's statements with their plans (--only lists)",
    )
    options = arguments.parse_args()
    print_json(asyncio.run(main_async(options)))


if __name__ == "__main__":
    main()
