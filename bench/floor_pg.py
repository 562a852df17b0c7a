"""The database floor: a bare loop of asyncpg inserts of the row an accepted webhook stores in `signals`.

Same open-loop plan as bench/loadgen.py (JSON on stdin, JSON on stdout), but each request is one
autocommitted INSERT on a pool of `connections` asyncpg connections: one round trip and one commit, with
none of the service's work around it. Also a closed loop ("sequential": true): one insert after another.

    echo '{"dsn": "postgresql://...", "user_id": "...", "rate": 300, "duration": 5}' |
        .venv/bin/python bench/floor_pg.py
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import asyncpg
from loadgen import run_open_loop, run_plan_from_stdin, summarize

# The user's row is locked first, as ingest does: the foreign key's check takes a key-share lock on it and
# the per-user count trigger then asks for the row lock, so two bare inserts for one user deadlock.
_INSERT = """
WITH account AS (SELECT id FROM users WHERE id = $2 FOR UPDATE)
INSERT INTO signals (id, user_id, chart_id, indicator, ticker, exchange, symbol, price, signal_type, interval,
                     alert_time, parse_status, parse_problems, extra, raw_body, content_type, body_sha256,
                     result, screenshot_status, created_at)
SELECT $1, account.id, 'bench', 'ADX DEF', 'BINANCE:BTCUSDT', 'BINANCE', 'BTCUSDT', 67890.5,
       'Divergencia Alcista', '15', $3, 'complete', '[]', '{}', $4, 'text/plain', $5, 'pending', 'pending', $3
FROM account
"""


async def insert(pool: asyncpg.Pool, user_id: uuid.UUID, body: bytes) -> None:
    await pool.execute(_INSERT, uuid.uuid4(), user_id, datetime.now(UTC), body, hashlib.sha256(body).digest())


async def run(plan: dict[str, Any]) -> dict[str, Any]:
    user_id = uuid.UUID(plan["user_id"])
    template: str = plan.get("body", "{n}")
    connections = int(plan.get("connections", 10))
    pool = await asyncpg.create_pool(plan["dsn"], min_size=connections, max_size=connections)
    clock = time.perf_counter
    try:
        if plan.get("sequential"):
            total = int(plan["count"])
            latencies = []
            started = clock()
            for n in range(total):
                begun = clock()
                await insert(pool, user_id, template.format(n=n).encode())
                latencies.append((clock() - begun) * 1000)
            wall = clock() - started
            return {
                "requests": total,
                "ok": total,
                "errors": 0,
                "achieved_rate": round(total / wall, 1),
                "wall_s": round(wall, 3),
                **summarize(latencies),
            }
        total = round(plan["rate"] * plan["duration"])
        spacing = plan["duration"] / total
        latencies = [0.0] * total
        statuses = ["unsent"] * total

        async def one(n: int, scheduled: float) -> None:
            try:
                await insert(pool, user_id, template.format(n=n).encode())
                statuses[n] = "200"
            except (OSError, asyncpg.PostgresError) as exc:
                statuses[n] = type(exc).__name__
            latencies[n] = (clock() - scheduled) * 1000

        started, _ = await run_open_loop(total, spacing, one)
        finished = clock()
        ok = statuses.count("200")
        result: dict[str, Any] = {
            "requests": total,
            "rate": plan["rate"],
            "duration_s": plan["duration"],
            "connections": connections,
            "statuses": dict(Counter(statuses)),
            "ok": ok,
            "errors": total - ok,
            "achieved_rate": round(ok / max(finished - started, 1e-9), 1),
            "wall_s": round(finished - started, 3),
            **summarize(latencies),
        }
        if plan.get("samples"):
            result["samples"] = [
                [round(n * spacing, 4), round(latencies[n], 2), statuses[n]] for n in range(total)
            ]
        return result
    finally:
        await pool.close()


if __name__ == "__main__":
    run_plan_from_stdin(run)
