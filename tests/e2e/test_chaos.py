"""Chaos: nothing accepted is ever lost.

Real processes (chart stub, storage, signal, edge, capture worker) on a database of their own and a
private Redis take a steady stream of webhooks while Redis is stopped and restarted, the signal service
is stopped (SIGTERM) and restarted, the capture worker is SIGKILLed and replaced, and Chromium is killed
under the new worker. At the end every webhook answered 200 or 202 must be exactly one signal, and every
signal's capture must have ended COMPLETED, or FAILED with a reason.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest

from alerts.processes import ManagedProcess, alerts_argv, free_port, http_ok
from apidevs.alerts.v1 import resources_pb2, user_service_pb2, user_service_pb2_grpc
from edge.spool import WebhookSpool
from mesh.grpc import open_channel
from tests.e2e.chaos_stack import ChaosStack, chaos_stack, run_quietly
from tests.e2e.stacks import fresh_database
from tests.keys import SYSTEM_KEYS
from tests.own_postgres import OwnPostgres, own_postgres

pytestmark = pytest.mark.e2e

WEBHOOKS = 240
STREAM_SECONDS = 60.0
# One alert in CAPTURE_EVERY names a ticker and so gets a capture; the rest are stored with status SKIPPED.
# A capture costs a Chromium page load (seconds of CPU on a small CI machine), a webhook milliseconds.
CAPTURE_EVERY = 5
SETTLE_DEADLINE_SECONDS = 150.0
UNLIMITED = {"signals_quota": 1_000_000, "rate_per_second": 1_000, "rate_burst": 1_000}

STACK_SETTINGS = {
    "ALERTS_LOG_LEVEL": "INFO",
    "ALERTS_PLAN_LIMITS": json.dumps(dict.fromkeys(("free", "basic", "pro", "premium"), UNLIMITED)),
    # The worker SIGKILLed below is noticed after this long and its unacknowledged jobs redelivered.
    "ALERTS_DRAMATIQ_HEARTBEAT_TIMEOUT_MS": "5000",
    "ALERTS_DRAMATIQ_MAINTENANCE_CHANCE": "200000",
    "ALERTS_CAPTURE_CONCURRENCY": "3",
    "ALERTS_CAPTURE_TIMEOUT_SECONDS": "10",
    "ALERTS_CAPTURE_TIME_LIMIT_SECONDS": "20",
    # Captures stuck PROCESSING (their worker died, or Redis was away when they ended) are re-queued.
    "ALERTS_CAPTURE_STALE_AFTER_SECONDS": "30",
    "ALERTS_SWEEP_INTERVAL_SECONDS": "5",
    "ALERTS_GRPC_GRACE_SECONDS": "5",
    "ALERTS_SPOOL_REPLAY_MAX_BACKOFF_SECONDS": "1",
}


@dataclass
class Sent:
    body: bytes
    status: int | None = None
    answer: dict[str, object] = field(default_factory=dict)
    error: str = ""
    # time.monotonic() when the request went out
    sent_at: float = 0.0


def alert(index: int, ticker: str | None) -> bytes:
    ticker_line = f"🪙 Ticker: {ticker}\n" if ticker else ""
    return (
        f"🚨 ADX DEF [APIDEVS]\n📈 Señal: Divergencia Alcista\n{ticker_line}"
        f"💰 Precio: ${60_000 + index}.25\n⏱️ Timeframe: 15\n🕒 Hora: 2026-11-27T14:30:00Z\n"
        f"chaos-{index}\n"
    ).encode()


def send_stream(edge_url: str, tokens: list[str], sent: list[Sent]) -> None:
    """Posts WEBHOOKS alerts at an even pace over STREAM_SECONDS, round-robin over the users."""
    interval = STREAM_SECONDS / WEBHOOKS
    started = time.monotonic()
    with httpx.Client(base_url=edge_url, timeout=10.0) as http:
        for index, item in enumerate(sent):
            delay = started + index * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            item.sent_at = time.monotonic()
            try:
                answer = http.post(
                    f"/webhook/u/{tokens[index % len(tokens)]}?chart=chaos",
                    content=item.body,
                    headers={"content-type": "text/plain"},
                )
            except httpx.HTTPError as exc:
                item.error = repr(exc)
                continue
            item.status = answer.status_code
            item.answer = answer.json()


def wait_until(what: str, condition: Callable[[], bool], deadline_seconds: float) -> None:
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"not within {deadline_seconds:.0f} s: {what}")


def fetch(dsn: str, query: str, *args: object) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        connection = await asyncpg.connect(dsn)
        try:
            return await connection.fetch(query, *args)
        finally:
            await connection.close()

    return asyncio.run(run())


def create_users(signal_addr: str, key: str) -> list[str]:
    """Two users with working TradingView sessions and one whose session expired; returns their tokens."""

    async def create() -> list[str]:
        tokens = []
        async with open_channel(signal_addr, key) as channel:
            users = user_service_pb2_grpc.UserServiceStub(channel)
            for plan, sessionid in (
                (resources_pb2.PLAN_PREMIUM, "chaos-premium"),
                (resources_pb2.PLAN_FREE, "chaos-free"),
                (resources_pb2.PLAN_PRO, "expired-chaos"),
            ):
                created = await users.CreateUser(user_service_pb2.CreateUserRequest(plan=plan))
                await users.SetTradingViewSession(
                    user_service_pb2.SetTradingViewSessionRequest(
                        user_id=created.user.user_id, sessionid=sessionid, sessionid_sign=f"sign-{sessionid}"
                    )
                )
                tokens.append(created.webhook_token)
        return tokens

    return asyncio.run(create())


@pytest.fixture
def chaos_database(database_url: str) -> Iterator[str]:
    with fresh_database(database_url) as url:
        yield url


def chaos(stack: ChaosStack, events: list[str]) -> None:
    """The faults, spread over the stream; each waits for the stack to be whole again before the next."""

    def note(event: str) -> None:
        events.append(f"{time.monotonic() - began:5.1f}s {event}")

    began = time.monotonic()
    time.sleep(6)
    stack.stop("redis")
    note("redis stopped")
    time.sleep(8)
    stack.start("redis")
    note("redis restarted")
    time.sleep(5)
    code = stack.stop("signal")
    note(f"signal service stopped (SIGTERM), exit code {code}")
    time.sleep(6)
    pending = stack.metric("alerts_spool_pending") or 0.0
    spooled_bytes = stack.metric("alerts_spool_bytes") or 0.0
    note(f"edge spool while the signal service is down: {pending:.0f} requests, {spooled_bytes:.0f} bytes")
    assert pending > 0, "the edge spooled nothing while the signal service was down"
    assert spooled_bytes > 0
    stack.start("signal")
    note("signal service restarted")
    time.sleep(5)
    [worker] = stack.worker_names()
    stack.kill(worker)
    note(f"{worker} SIGKILLed")
    replacement = stack.start_worker()
    note(f"{replacement} started")
    # Chromium starts with the worker; give it a job or two in flight before killing it.
    time.sleep(6)
    note(f"{stack.kill_chromium(replacement)} Chromium processes of {replacement} SIGKILLed")


def test_every_accepted_webhook_is_stored_once_and_captured_or_failed(
    service_env: dict[str, str], service_key: str, chaos_database: str, tmp_path: Path
) -> None:
    dsn = chaos_database.replace("+asyncpg", "")
    base_env = {
        key: value for key, value in service_env.items() if key not in ("ALERTS_DATA_DIR", "ALERTS_REDIS_URL")
    }
    base_env["ALERTS_REDIS_NAMESPACE"] = f"chaos-{uuid.uuid4().hex[:8]}"
    with chaos_stack(base_env | STACK_SETTINGS, chaos_database, tmp_path) as stack:
        tokens = create_users(stack.signal_addr, service_key)
        tickers = ("BINANCE:BTCUSDT", "BINANCE:ETHUSDT", "NASDAQ:AAPL")
        sent = [
            Sent(alert(index, tickers[index % len(tickers)] if index % CAPTURE_EVERY == 0 else None))
            for index in range(WEBHOOKS)
        ]
        events: list[str] = []
        sender = threading.Thread(target=send_stream, args=(stack.edge_url, tokens, sent), daemon=True)
        sender.start()
        chaos(stack, events)
        sender.join(timeout=STREAM_SECONDS + 60)
        assert not sender.is_alive(), "the webhook stream did not finish"

        def settled() -> bool:
            if stack.metric("alerts_spool_pending") != 0.0:
                return False
            rows = fetch(
                dsn, "SELECT count(*) AS open FROM screenshots WHERE status IN ('pending', 'processing')"
            )
            return rows[0]["open"] == 0

        print("\nchaos timeline:\n  " + "\n  ".join(events))
        try:
            wait_until("spool drained and every capture finished", settled, SETTLE_DEADLINE_SECONDS)
        except AssertionError as exc:
            captures = fetch(dsn, "SELECT status, error, count(*) FROM screenshots GROUP BY 1, 2")
            spooled = stack.metric("alerts_spool_pending")
            raise AssertionError(
                f"{exc}; spooled: {spooled}; captures: {[tuple(row) for row in captures]}; logs in {tmp_path}"
            ) from None

        rows = fetch(
            dsn,
            "SELECT s.id, s.raw_body, s.screenshot_status, c.status, c.error, c.completed_at "
            "FROM signals s LEFT JOIN screenshots c ON c.signal_id = s.id",
        )
        # The operator's shell: its key is the admin's.
        operator_env = stack.env | {"ALERTS_SERVICE_API_KEY": SYSTEM_KEYS.operator}
        failed_listing = run_quietly(alerts_argv("captures", "failed"), operator_env)
        retried = next(row for row in rows if row["status"] == "failed")
        retry = run_quietly(alerts_argv("captures", "retry", str(retried["id"])), operator_env)
        assert (retry.returncode, retry.stdout.strip()) == (0, "captures re-queued: 1"), retry.stderr

        def retried_capture_ended() -> bool:
            [row] = fetch(
                dsn, "SELECT status, completed_at FROM screenshots WHERE signal_id = $1", retried["id"]
            )
            return (
                row["status"] == "failed"
                and (row["completed_at"] or retried["completed_at"]) > retried["completed_at"]
            )

        wait_until("the retried capture ran again", retried_capture_ended, 60)

    by_status: dict[object, int] = {}
    for item in sent:
        by_status[item.status or item.error] = by_status.get(item.status or item.error, 0) + 1
    accepted = [item for item in sent if item.status in (200, 202)]
    stored: dict[bytes, int] = {}
    for row in rows:
        stored[row["raw_body"]] = stored.get(row["raw_body"], 0) + 1
    outcomes: dict[str, int] = {}
    for row in rows:
        key = f"{row['status'] or row['screenshot_status']}:{row['error'] or ''}"
        outcomes[key] = outcomes.get(key, 0) + 1
    print(
        f"webhooks sent: {len(sent)}; answers: {by_status}; "
        f"accepted (200/202): {len(accepted)}; signals stored: {len(rows)}; captures: {outcomes}"
    )

    assert by_status.keys() <= {200, 202}, f"the edge refused or dropped webhooks: {by_status}"
    assert any(item.status == 202 for item in sent), "the signal service outage never made the edge spool"
    assert {item.body for item in accepted} == set(stored), "accepted webhooks missing, or unknown signals"
    assert [body for body, count in stored.items() if count > 1] == [], "a webhook was stored twice"
    captured = {item.body for index, item in enumerate(sent) if index % CAPTURE_EVERY == 0}
    for row in rows:
        if row["raw_body"] not in captured:
            assert (row["screenshot_status"], row["status"]) == ("skipped", None), row
            continue
        assert row["status"] in ("completed", "failed"), row
        assert row["screenshot_status"] == row["status"], row
        if row["status"] == "failed":
            assert row["error"], f"a capture FAILED without a reason: {row}"
    assert outcomes.get("completed:", 0) > 0
    failed = sum(count for key, count in outcomes.items() if key.startswith("failed:"))
    assert failed_listing.returncode == 0, failed_listing.stderr
    assert f"{failed} failed capture(s)" in failed_listing.stderr


def test_the_edge_answers_in_flight_webhooks_after_sigterm(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    """SIGTERM: the edge stops accepting connections but finishes the webhook it is reading."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("ALERTS_")}
    env |= {
        "ALERTS_API_KEYS": service_env["ALERTS_API_KEYS"],
        "ALERTS_SERVICE_API_KEY": SYSTEM_KEYS.edge,
        "ALERTS_DATA_DIR": str(tmp_path / "data"),
        "ALERTS_EDGE_PORT": str(port),
        # Nothing listens there: the webhook is spooled, which proves it was handled to the end.
        "ALERTS_SIGNAL_ADDR": f"127.0.0.1:{free_port()}",
    }
    edge = ManagedProcess(
        "edge",
        alerts_argv("serve", "edge"),
        env,
        ready=lambda: http_ok(f"http://127.0.0.1:{port}/health/live"),
        log_path=tmp_path / "edge.log",
    )
    edge.start()
    try:
        edge.wait_ready(60)
        assert edge.process is not None
        body = alert(0, "BINANCE:BTCUSDT")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(
                b"POST /webhook/u/whk_"
                + b"T" * 43
                + b" HTTP/1.1\r\n"
                + b"Host: edge\r\nContent-Type: text/plain\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body[:10]
            )
            edge.process.send_signal(signal.SIGTERM)
            wait_until("the edge stops accepting connections", lambda: not _accepts(port), 10)
            client.sendall(body[10:])
            status_line = client.recv(4096).split(b"\r\n", 1)[0]
        assert status_line == b"HTTP/1.1 202 Accepted"
        edge.process.wait(timeout=30)
    finally:
        edge.stop()

    async def spooled() -> int:
        spool = WebhookSpool(tmp_path / "data" / "spool", max_bytes=1 << 20)
        await spool.open()
        try:
            return (await spool.totals()).pending
        finally:
            await spool.close()

    assert asyncio.run(spooled()) == 1


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


# --- Infrastructure faults (issue 20): PostgreSQL of the stack's own killed mid-burst, the signal service
# SIGKILLed with captures in flight, a worker SIGKILLed mid-capture. ---------------------------------------

# After a fault ends, how soon the edge must answer 200 again (and /health turn 200).
BACK_WITHIN_SECONDS = 1.0
# Every capture must have ended this long after the last fault.
CAPTURES_END_WITHIN_SECONDS = 180.0
INFRASTRUCTURE_SETTINGS = {
    # Jobs that find a dependency down try again soon, so captures end soon after the faults do.
    "ALERTS_CAPTURE_INFRASTRUCTURE_MIN_BACKOFF_MS": "500",
    "ALERTS_CAPTURE_INFRASTRUCTURE_MAX_BACKOFF_MS": "4000",
}


def seconds_until(condition: Callable[[], bool], limit_seconds: float) -> float:
    """How long `condition` took to hold, polled every 20 ms; inf if not within `limit_seconds`."""
    started = time.monotonic()
    while time.monotonic() - started < limit_seconds:
        if condition():
            return time.monotonic() - started
        time.sleep(0.02)
    return float("inf")


def capture_starts(stack: ChaosStack, worker: str) -> int:
    return (stack.log_dir / f"{worker}.log").read_text(errors="replace").count('"msg": "capture started"')


@dataclass
class Recovery:
    """When the signal service was serving again, and how long /health took to turn 200 after that."""

    ready_at: float
    health_seconds: float
    until: float = float("inf")


def infrastructure_chaos(
    stack: ChaosStack, postgres: OwnPostgres, events: list[str], recoveries: list[Recovery]
) -> float:
    """The faults, spread over the stream; returns when the last one ended (time.monotonic())."""
    began = time.monotonic()

    def note(event: str) -> None:
        events.append(f"{time.monotonic() - began:5.1f}s {event}")

    def fault(what: str) -> None:
        if recoveries:
            recoveries[-1].until = time.monotonic()
        note(what)

    def back(what: str) -> None:
        recovery = Recovery(
            ready_at=time.monotonic(),
            health_seconds=seconds_until(lambda: http_ok(f"{stack.edge_url}/health"), 30),
        )
        recoveries.append(recovery)
        note(f"{what}; /health 200 after {recovery.health_seconds:.2f} s")

    time.sleep(6)
    fault("PostgreSQL SIGKILLed (every process)")
    postgres.crash("kill")
    time.sleep(6)
    postgres.start()
    back("PostgreSQL restarted")
    time.sleep(6)
    [worker] = stack.worker_names()
    starts = capture_starts(stack, worker)
    wait_until("a capture in flight", lambda: capture_starts(stack, worker) > starts, 30)
    fault("signal service SIGKILLed with a capture in flight")
    stack.kill("signal")
    time.sleep(5)
    stack.start("signal")
    back("signal service serving again")
    time.sleep(6)
    starts = capture_starts(stack, worker)
    wait_until("a capture in flight", lambda: capture_starts(stack, worker) > starts, 30)
    fault(f"{worker} SIGKILLed mid-capture")
    stack.kill(worker)
    replacement = stack.start_worker()
    note(f"{replacement} started")
    time.sleep(4)
    fault("PostgreSQL shut down (fast)")
    postgres.crash("fast")
    time.sleep(5)
    postgres.start()
    back("PostgreSQL restarted")
    # The stream goes on after the last fault; the recovery's window runs to its end.
    return time.monotonic()


def migrated_database(postgres: OwnPostgres) -> str:
    from signal_service.migrate import upgrade

    async def create() -> None:
        connection = await asyncpg.connect(postgres.url.replace("+asyncpg", ""))
        try:
            await connection.execute("CREATE DATABASE alerts")
        finally:
            await connection.close()

    asyncio.run(create())
    url = postgres.database_url("alerts")
    upgrade(url)
    return url


def test_infrastructure_faults_strand_no_capture_and_the_edge_is_back_within_a_second(
    service_env: dict[str, str], service_key: str, tmp_path: Path
) -> None:
    base_env = {
        key: value for key, value in service_env.items() if key not in ("ALERTS_DATA_DIR", "ALERTS_REDIS_URL")
    }
    base_env["ALERTS_REDIS_NAMESPACE"] = f"chaos-{uuid.uuid4().hex[:8]}"
    with own_postgres() as postgres:
        database_url = migrated_database(postgres)
        dsn = database_url.replace("+asyncpg", "")
        with chaos_stack(
            base_env | STACK_SETTINGS | INFRASTRUCTURE_SETTINGS, database_url, tmp_path
        ) as stack:
            tokens = create_users(stack.signal_addr, service_key)
            tickers = ("BINANCE:BTCUSDT", "BINANCE:ETHUSDT", "NASDAQ:AAPL")
            sent = [
                Sent(alert(index, tickers[index % len(tickers)] if index % CAPTURE_EVERY == 0 else None))
                for index in range(WEBHOOKS)
            ]
            events: list[str] = []
            recoveries: list[Recovery] = []
            sender = threading.Thread(target=send_stream, args=(stack.edge_url, tokens, sent), daemon=True)
            sender.start()
            last_fault = infrastructure_chaos(stack, postgres, events, recoveries)
            sender.join(timeout=STREAM_SECONDS + 60)
            assert not sender.is_alive(), "the webhook stream did not finish"
            print("\ninfrastructure chaos timeline:\n  " + "\n  ".join(events))

            def settled() -> bool:
                if stack.metric("alerts_spool_pending") != 0.0:
                    return False
                rows = fetch(
                    dsn, "SELECT count(*) AS open FROM screenshots WHERE status IN ('pending', 'processing')"
                )
                return rows[0]["open"] == 0

            remaining = CAPTURES_END_WITHIN_SECONDS - (time.monotonic() - last_fault)
            try:
                wait_until("spool drained and every capture finished", settled, max(remaining, 1.0))
            except AssertionError as exc:
                captures = fetch(dsn, "SELECT status, error, count(*) FROM screenshots GROUP BY 1, 2")
                raise AssertionError(
                    f"{exc}; spooled: {stack.metric('alerts_spool_pending')}; "
                    f"captures: {[tuple(row) for row in captures]}; logs in {tmp_path}"
                ) from None
            rows = fetch(
                dsn,
                "SELECT s.raw_body, s.screenshot_status, c.status, c.error "
                "FROM signals s LEFT JOIN screenshots c ON c.signal_id = s.id",
            )

    by_status: dict[object, int] = {}
    for item in sent:
        by_status[item.status or item.error] = by_status.get(item.status or item.error, 0) + 1
    accepted = [item for item in sent if item.status in (200, 202)]
    stored: dict[bytes, int] = {}
    for row in rows:
        stored[row["raw_body"]] = stored.get(row["raw_body"], 0) + 1
    outcomes: dict[str, int] = {}
    for row in rows:
        key = f"{row['status'] or row['screenshot_status']}:{row['error'] or ''}"
        outcomes[key] = outcomes.get(key, 0) + 1
    # Webhooks sent after a recovery's grace second and before the next fault: all must be 200.
    late_spooled = [
        (index, round(item.sent_at - recovery.ready_at, 2), item.status, item.error)
        for index, recovery in enumerate(recoveries)
        for item in sent
        if recovery.ready_at + BACK_WITHIN_SECONDS <= item.sent_at < recovery.until and item.status != 200
    ]
    print(
        f"webhooks sent: {len(sent)}; answers: {by_status}; accepted (200/202): {len(accepted)}; "
        f"signals stored: {len(rows)}; captures: {outcomes}; "
        f"/health back after: {[round(recovery.health_seconds, 2) for recovery in recoveries]} s; "
        f"not 200 after a recovery: {len(late_spooled)}"
    )

    assert by_status.keys() <= {200, 202}, f"the edge answered 5xx or dropped webhooks: {by_status}"
    assert any(item.status == 202 for item in sent), "the outages never made the edge spool"
    assert {item.body for item in accepted} == set(stored), "accepted webhooks missing, or unknown signals"
    assert [body for body, count in stored.items() if count > 1] == [], "a webhook was stored twice"
    captured = {item.body for index, item in enumerate(sent) if index % CAPTURE_EVERY == 0}
    for row in rows:
        if row["raw_body"] not in captured:
            assert (row["screenshot_status"], row["status"]) == ("skipped", None), row
            continue
        assert row["status"] in ("completed", "failed"), row
        if row["status"] == "failed":
            assert row["error"], f"a capture FAILED without a reason: {row}"
    assert outcomes.get("completed:", 0) > 0
    assert [
        recovery.health_seconds for recovery in recoveries if recovery.health_seconds > BACK_WITHIN_SECONDS
    ] == []
    assert late_spooled == [], "(recovery, seconds after it, answer): the edge kept spooling after a recovery"
