"""A capture's row updates on signals and screenshots, at a schema revision: how many are heap-only (HOT),
the database CPU they cost, and the bytes per signal they leave behind.

Run: .venv/bin/python bench/bench_signal_updates.py [--signals 20000] [--revision head|0014_partitions]

On a database of its own, migrated to the revision: signals arrive in batches of 100 from 100 users (one
INSERT per table per batch, as group commit writes them), and each is claimed two batches later and
reported COMPLETED two batches after that, one transaction per claim and per report updating its
screenshot and its signal, as ClaimCapture and ReportCapture do (captures/service.py). Then, as
retention would, each signal's screenshot is expired in batches of 500 (retention/repository.py's two
UPDATEs). Printed: per phase, the rows updated and how many of them HOT (pg_stat_user_tables), the
backend's CPU ms per 1,000 signals, and bytes per signal of each table and its indexes at the end, before
and after a VACUUM (which frees dead index entries but does not shrink the index).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import updates, updates_between
from harness import print_json

from signal_service.migrate import upgrade

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
BATCH = 100
USERS = 100
CLAIM_AFTER = 2  # batches
REPORT_AFTER = 4
EXPIRE_BATCH = 500

_INSERT_SIGNALS = """
INSERT INTO signals (id, user_id, chart_id, indicator, ticker, exchange, symbol, price, signal_type, interval,
                     alert_time, parse_status, raw_body, content_type, body_sha256, source_ip, result,
                     screenshot_status, created_at)
SELECT s.id, s.user_id, 'bench', 'Indicator [APIDEVS]', 'BINANCE:BTCUSDT', 'BINANCE', 'BTCUSDT', 100.25,
       'Buy', '15', now(), 'complete', b.body, 'text/plain', sha256(b.body), '203.0.113.7', 'pending',
       'pending', now()
FROM unnest($1::uuid[], $2::uuid[]) AS s(id, user_id),
     LATERAL (SELECT convert_to('Ticker: BINANCE:BTCUSDT\nPrice: 100.25\nid: ' || s.id, 'UTF8') AS body) b
"""
_INSERT_SCREENSHOTS = """
INSERT INTO screenshots (signal_id, user_id, status)
SELECT s.id, s.user_id, 'pending' FROM unnest($1::uuid[], $2::uuid[]) AS s(id, user_id)
"""
_CLAIM = (
    "UPDATE screenshots SET status = 'processing', attempts = 1, claim = 1, worker_id = 'bench',"
    " claimed_at = now(), updated_at = now() WHERE signal_id = $1::uuid",
    "UPDATE signals SET screenshot_status = 'processing', updated_at = now() WHERE id = $1",
)
_REPORT = (
    "UPDATE screenshots SET status = 'completed', object_key = 'screenshots/' || $1::uuid::text || '.png',"
    " size_bytes = 120000, width = 1228, height = 682, duration_ms = 900, completed_at = now(),"
    " updated_at = now() WHERE signal_id = $1::uuid",
    "UPDATE signals SET screenshot_status = 'completed', updated_at = now() WHERE id = $1",
)
_EXPIRE = (
    "UPDATE screenshots SET status = 'expired', updated_at = now() WHERE signal_id = ANY($1::uuid[])",
    "UPDATE signals SET screenshot_status = 'expired', updated_at = now() WHERE id = ANY($1::uuid[])",
)


def backend_cpu(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


async def sizes(dsn: str, signals: int) -> dict[str, Any]:
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(
            "SELECT relname, pg_table_size(oid) AS heap, pg_indexes_size(oid) AS indexes FROM pg_class"
            " WHERE relname IN ('signals', 'screenshots')"
        )
    finally:
        await connection.close()
    return {
        row["relname"]: {
            "table_bytes_per_signal": round(row["heap"] / signals, 1),
            "index_bytes_per_signal": round(row["indexes"] / signals, 1),
        }
        for row in rows
    }


async def phase(dsn: str, signals: int, work: Any) -> dict[str, Any]:
    """Runs `work(connection)` on one connection, then reports its updates (read once the backend has
    exited, which flushes its statistics) and its backend's CPU per 1,000 signals."""
    before = await updates(dsn)
    connection = await asyncpg.connect(dsn)
    pid = connection.get_server_pid()
    cpu = backend_cpu(pid)
    started = time.perf_counter()
    try:
        await work(connection)
        used = backend_cpu(pid) - cpu
    finally:
        await connection.close()
    seconds = time.perf_counter() - started
    await asyncio.sleep(1)
    return {
        "seconds": round(seconds, 1),
        "backend_cpu_ms_per_1000_signals": round(used * 1e6 / signals, 1),
        "updates": updates_between(before, await updates(dsn)),
    }


async def run(options: argparse.Namespace) -> dict[str, Any]:
    name = f"alerts_bench_{uuid.uuid4().hex[:10]}"
    dsn = f"postgresql://postgres@127.0.0.1:5432/{name}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        await asyncio.to_thread(
            upgrade, dsn.replace("postgresql://", "postgresql+asyncpg://"), options.revision
        )
        setup = await asyncpg.connect(dsn)
        try:
            users = [uuid.uuid4() for _ in range(USERS)]
            await setup.executemany(
                "INSERT INTO users (id, plan, webhook_token_hash, webhook_enabled, signals_quota,"
                " signals_used, quota_reset_at, event_seq)"
                " VALUES ($1::uuid, 'premium', $1::uuid::text, true, 100000000, 0,"
                " now() + interval '30 days', 0)",
                [(user,) for user in users],
            )
        finally:
            await setup.close()
        batches = [
            [(uuid.uuid4(), users[index % USERS]) for index in range(start, start + BATCH)]
            for start in range(0, options.signals, BATCH)
        ]

        async def capture_lifecycle(connection: asyncpg.Connection) -> None:
            for step in range(len(batches) + REPORT_AFTER):
                if step < len(batches):
                    ids, owners = zip(*batches[step], strict=True)
                    async with connection.transaction():
                        await connection.execute(_INSERT_SIGNALS, list(ids), list(owners))
                        await connection.execute(_INSERT_SCREENSHOTS, list(ids), list(owners))
                for lag, statements in ((CLAIM_AFTER, _CLAIM), (REPORT_AFTER, _REPORT)):
                    if 0 <= step - lag < len(batches):
                        for signal_id, _ in batches[step - lag]:
                            async with connection.transaction():
                                for statement in statements:
                                    await connection.execute(statement, signal_id)

        async def expire(connection: asyncpg.Connection) -> None:
            ids = [signal_id for batch in batches for signal_id, _ in batch]
            for start in range(0, len(ids), EXPIRE_BATCH):
                async with connection.transaction():
                    for statement in _EXPIRE:
                        await connection.execute(statement, ids[start : start + EXPIRE_BATCH])

        signals = len(batches) * BATCH
        result: dict[str, Any] = {"revision": options.revision, "signals": signals}
        result["capture"] = await phase(dsn, signals, capture_lifecycle)
        result["bytes_after_capture"] = await sizes(dsn, signals)
        result["expiry"] = await phase(dsn, signals, expire)
        result["bytes_after_expiry"] = await sizes(dsn, signals)
        vacuum = await asyncpg.connect(dsn)
        try:
            await vacuum.execute("VACUUM signals, screenshots")
        finally:
            await vacuum.close()
        result["bytes_after_vacuum"] = await sizes(dsn, signals)
        return result
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("--signals", type=int, default=20_000)
    arguments.add_argument("--revision", default="head")
    print_json(asyncio.run(run(arguments.parse_args())))


if __name__ == "__main__":
    main()
