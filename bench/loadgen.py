"""Open-loop HTTP/1.1 load generator, run as its own process.

Reads a plan as JSON on stdin, sends POSTs on keep-alive connections at their scheduled times whatever
the server's pace (open loop), and prints the outcome as JSON on stdout. A request's latency counts from
its scheduled send time, so time spent waiting for a free connection or a slow server is in it
(no coordinated omission).

Plan: {"urls": [...], "rate": 300, "duration": 60, "connections": 200, "timeout": 10, "body": "...{n}..."}
sends rate * duration requests evenly spaced over `duration` seconds, request n to urls[n % len(urls)],
with `body` formatted with n (so that no two bodies are equal). With "clients": N in place of "rate", N
clients each send their next request as soon as the last was answered, for `duration` seconds (closed
loop; latency counts from each send). With "close": true, every request goes on a new connection. Output:
counts by status, percentiles, and a per-request list [scheduled_offset_s, latency_ms, status] when
"samples" is true (open loop).

    echo '{"urls": ["http://127.0.0.1:8080/x"], "rate": 100, "duration": 1, "body": "{n}"}' |
        .venv/bin/python bench/loadgen.py
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import uvloop

_KEEP_ALIVE_SECONDS = 4.0


class ConnectionLost(Exception):
    """The server closed a kept-alive connection before answering; the request may be sent again."""


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int
    path: str


def parse_target(url: str) -> Target:
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return Target(parts.hostname or "127.0.0.1", parts.port or 80, path)


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.used = False
        self.idle_since = time.monotonic()

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def post(self, request: bytes) -> tuple[int, bool]:
        """Sends one request; returns the status and whether the connection may be used again."""
        reused, self.used = self.used, True
        self.writer.write(request)
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            if reused:
                raise ConnectionLost from exc
            raise
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        else:
            await self.reader.readexactly(int(headers.get("content-length", "0")))
        return status, headers.get("connection", "").lower() != "close"

    def close(self) -> None:
        self.writer.close()


class ConnectionPool:
    """At most `size` connections; idle ones are reused newest first, so the rest may time out unused."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self.host, self.port, self.size = host, port, size
        self.idle: list[Connection] = []
        self.open = 0
        self.opened_total = 0
        self._slots = asyncio.Semaphore(size)

    async def acquire(self) -> Connection:
        await self._slots.acquire()
        while self.idle:
            connection = self.idle.pop()
            # The edge closes connections idle for 5 s (uvicorn timeout_keep_alive): do not race it.
            if time.monotonic() - connection.idle_since < _KEEP_ALIVE_SECONDS:
                return connection
            connection.close()
        try:
            connection = await Connection.open(self.host, self.port)
        except BaseException:
            self._slots.release()
            raise
        self.opened_total += 1
        return connection

    def release(self, connection: Connection, reusable: bool) -> None:
        if reusable:
            connection.idle_since = time.monotonic()
            self.idle.append(connection)
        else:
            connection.close()
        self._slots.release()

    def close(self) -> None:
        for connection in self.idle:
            connection.close()
        self.idle.clear()


def build_request(target: Target, body: bytes, *, close: bool = False) -> bytes:
    """One POST; with `close` it asks the server to close the connection after answering."""
    connection = "Connection: close\r\n" if close else ""
    head = (
        f"POST {target.path} HTTP/1.1\r\nHost: {target.host}:{target.port}\r\n"
        f"Content-Type: text/plain\r\nUser-Agent: alerts-bench\r\nContent-Length: {len(body)}\r\n"
        f"{connection}\r\n"
    )
    return head.encode() + body


async def send(pool: ConnectionPool, request: bytes) -> int:
    for _attempt in range(3):
        connection = await pool.acquire()
        try:
            status, reusable = await connection.post(request)
        except ConnectionLost:
            pool.release(connection, False)
            continue
        except BaseException:
            pool.release(connection, False)
            raise
        pool.release(connection, reusable)
        return status
    raise ConnectionError("kept-alive connections kept closing")


async def run_open_loop(
    total: int, spacing: float, one: Callable[[int, float], Awaitable[None]]
) -> tuple[float, float]:
    """Starts `one(n, scheduled)` at each request's scheduled time without waiting for earlier ones (open
    loop), then waits for them all; returns the schedule's start (perf_counter) and how late, in ms, the
    last request was started."""
    clock = time.perf_counter
    tasks = []
    started = clock() + 0.05
    for n in range(total):
        scheduled = started + n * spacing
        delay = scheduled - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(n, scheduled)))
    send_lag_ms = (clock() - (started + (total - 1) * spacing)) * 1000
    await asyncio.gather(*tasks)
    return started, send_lag_ms


async def run_closed_loop(
    clients: int, duration: float, one: Callable[[int, float], Awaitable[None]]
) -> tuple[float, int]:
    """`clients` loops, each starting `one(n, now)` as soon as its previous request was answered, until
    `duration` has passed; returns the start (perf_counter) and how many requests were started."""
    clock = time.perf_counter
    numbers = itertools.count()
    started = clock()
    deadline = started + duration

    async def client() -> None:
        while (now := clock()) < deadline:
            await one(next(numbers), now)

    await asyncio.gather(*(client() for _ in range(clients)))
    return started, next(numbers)


async def run(plan: dict[str, Any]) -> dict[str, Any]:
    """Open loop at plan["rate"] for plan["duration"] seconds, or closed loop with plan["clients"]; with
    plan["close"], every request goes on a new connection."""
    targets = [parse_target(url) for url in plan["urls"]]
    closed_loop = "clients" in plan
    template: str = plan.get("body", "{n}")
    timeout = float(plan.get("timeout", 10))
    close = bool(plan.get("close", False))

    def request(n: int) -> bytes:
        return build_request(targets[n % len(targets)], template.format(n=n).encode(), close=close)

    if closed_loop:
        total, spacing = 0, 0.0
        requests: list[bytes] = []
    else:
        total = round(plan["rate"] * plan["duration"])
        spacing = plan["duration"] / total
        # Built before the clock starts: the load generator's own work would otherwise delay sends.
        requests = [request(n) for n in range(total)]
    pool = ConnectionPool(
        targets[0].host, targets[0].port, int(plan.get("clients", plan.get("connections", 200)))
    )
    latencies: dict[int, float] = {}
    statuses: dict[int, str] = {}
    clock = time.perf_counter

    async def one(n: int, scheduled: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                statuses[n] = str(await send(pool, requests[n] if requests else request(n)))
        except TimeoutError:
            statuses[n] = "timeout"
        except OSError as exc:
            statuses[n] = type(exc).__name__
        latencies[n] = (clock() - scheduled) * 1000

    if closed_loop:
        started, total = await run_closed_loop(int(plan["clients"]), float(plan["duration"]), one)
        send_lag_ms = 0.0
    else:
        started, send_lag_ms = await run_open_loop(total, spacing, one)
    finished = clock()
    pool.close()
    ok = [latencies[n] for n in range(total) if statuses[n].startswith("2")]
    result: dict[str, Any] = {
        "requests": total,
        "rate": "closed loop" if closed_loop else plan["rate"],
        "duration_s": plan["duration"],
        "connections": pool.size,
        "connections_opened": pool.opened_total,
        "statuses": dict(Counter(statuses.values())),
        "ok": len(ok),
        "errors": total - len(ok),
        "achieved_rate": round(len(ok) / max(finished - started, 1e-9), 1),
        "wall_s": round(finished - started, 3),
        "last_send_lag_ms": round(send_lag_ms, 2),
        **summarize([latencies[n] for n in range(total)]),
    }
    if plan.get("samples"):
        result["samples"] = [
            [round(n * spacing, 4), round(latencies[n], 2), statuses[n]] for n in range(total)
        ]
    return result


def percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summarize(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "p50_ms": round(percentile(ordered, 50), 2),
        "p90_ms": round(percentile(ordered, 90), 2),
        "p99_ms": round(percentile(ordered, 99), 2),
        "max_ms": round(ordered[-1], 2) if ordered else float("nan"),
    }


def run_plan_from_stdin(runner: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]) -> None:
    """Runs the plan read from stdin with `runner` and prints its result with the instrument's own CPU
    and wall time: the one entry point of this load generator and of the bare-insert floor."""
    plan = json.load(sys.stdin)
    # The instrument's own collections would show up as the server's latency.
    gc.collect()
    gc.freeze()
    started = time.perf_counter()
    result = uvloop.run(runner(plan))
    result["loadgen_cpu_s"] = round(time.process_time(), 3)
    result["loadgen_wall_s"] = round(time.perf_counter() - started, 3)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    run_plan_from_stdin(run)
