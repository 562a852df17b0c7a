"""Tenancy and security through the real edge (HTTP) and the real signal server (gRPC, PostgreSQL, Redis):
tokens and rotation, allowlists, trusted proxies, quotas, dedupe, rate limits, and the audit of each."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from google.protobuf import field_mask_pb2

from apidevs.alerts.v1 import resources_pb2, signal_service_pb2, user_service_pb2
from tests.integration.edge.conftest import STRICT_UNKNOWN_TOKEN_BURST, audit_rows
from tests.support import SAMPLE, create_user

TRADINGVIEW_ADDRESSES = ("52.89.214.238", "34.212.75.30", "54.218.53.128", "52.32.178.7")


def fresh_address() -> str:
    """A distinct source address per call site, so that per-address budgets never meet across tests."""
    raw = uuid.uuid4().bytes
    return f"198.18.{raw[0]}.{raw[1] or 1}"


async def post(http: httpx.AsyncClient, token: str, body: bytes = SAMPLE, **kwargs) -> httpx.Response:
    headers = {"content-type": "text/plain", "x-forwarded-for": fresh_address()} | kwargs.pop("headers", {})
    return await http.post(f"/webhook/u/{token}", content=body, headers=headers, **kwargs)


async def update_user(users, user_id: str, **fields) -> resources_pb2.User:
    return await users.UpdateUser(
        user_service_pb2.UpdateUserRequest(
            user=resources_pb2.User(user_id=user_id, **fields),
            update_mask=field_mask_pb2.FieldMask(paths=list(fields)),
        )
    )


async def test_sample_alert_is_accepted_and_audited_with_the_request_facts(http, users, db) -> None:
    created = await create_user(users)
    address = fresh_address()
    answer = await post(
        http, created.webhook_token, headers={"x-forwarded-for": address, "user-agent": "Go-http-client/1.1"}
    )
    assert answer.status_code == 200
    payload = answer.json()
    assert payload["success"] is True
    assert payload["screenshot_status"] == "pending"
    assert payload["duplicate"] is False
    assert payload["estimated_wait"] > 0

    [row] = await audit_rows(db, "signal_id = $1", uuid.UUID(payload["signal_id"]))
    assert row["user_id"] == uuid.UUID(created.user.user_id)
    assert row["outcome"] == "accepted"
    assert row["source_ip"] == address
    assert row["user_agent"] == "Go-http-client/1.1"
    # The body is the signal's raw_body; the audit row keeps its hash and size, not a second copy.
    assert row["body"] is None
    assert row["body_size"] == len(SAMPLE)
    assert row["body_sha256"] == hashlib.sha256(SAMPLE).hexdigest()
    assert row["latency_ms"] > 0
    assert row["request_id"] == answer.headers["x-request-id"]
    assert created.webhook_token not in repr(dict(row))


async def test_rotation_without_grace_retires_the_old_token_at_once(http, users) -> None:
    created = await create_user(users)
    rotated = await users.RotateWebhookToken(
        user_service_pb2.RotateWebhookTokenRequest(user_id=created.user.user_id)
    )
    old = await post(http, created.webhook_token)
    assert old.status_code == 404
    # Exactly what a token that never existed gets: no hint that this one did.
    never = await post(http, "whk_" + "Q" * 43)
    assert (old.json(), old.headers.get("retry-after")) == (never.json(), never.headers.get("retry-after"))
    assert (await post(http, rotated.webhook_token)).status_code == 200


async def test_rotation_with_grace_keeps_the_old_token_until_the_grace_ends(http, users, db) -> None:
    created = await create_user(users)
    rotated = await users.RotateWebhookToken(
        user_service_pb2.RotateWebhookTokenRequest(user_id=created.user.user_id, grace_period_seconds=3600)
    )
    assert (await post(http, created.webhook_token)).status_code == 200
    assert (await post(http, rotated.webhook_token, SAMPLE + b"\n")).status_code == 200

    await db.execute(
        "UPDATE users SET previous_token_expires_at = now() - interval '1 second' WHERE id = $1",
        uuid.UUID(created.user.user_id),
    )
    assert (await post(http, created.webhook_token, b"BINANCE:ETHUSDT late")).status_code == 404
    assert (await post(http, rotated.webhook_token, b"BINANCE:ETHUSDT on time")).status_code == 200


async def test_tokens_are_long_random_and_only_their_hash_is_stored(users, db) -> None:
    created = await create_user(users)
    token = created.webhook_token
    assert token.startswith("whk_")
    assert len(token.removeprefix("whk_")) * 6 >= 128
    assert all(ch.isalnum() or ch in "-_" for ch in token.removeprefix("whk_"))
    row = await db.fetchrow("SELECT * FROM users WHERE id = $1", uuid.UUID(created.user.user_id))
    assert row["webhook_token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert token not in repr(dict(row))


async def test_disabled_webhook_is_forbidden(http, users) -> None:
    created = await create_user(users)
    await update_user(users, created.user.user_id, webhook_enabled=False)
    answer = await post(http, created.webhook_token)
    assert answer.status_code == 403
    assert answer.json() == {"success": False, "error": "webhook_disabled"}
    await update_user(users, created.user.user_id, webhook_enabled=True)
    assert (await post(http, created.webhook_token)).status_code == 200


async def test_tradingview_preset_admits_only_tradingview_addresses(http, users) -> None:
    created = await create_user(users, ip_allowlist=["tradingview"])
    for index, address in enumerate(TRADINGVIEW_ADDRESSES):
        # A proxy in front of ours may have appended more hops; the right-most untrusted one counts.
        forwarded = f"6.6.6.6, {address}"
        answer = await post(
            http,
            created.webhook_token,
            f"BINANCE:BTCUSDT {index}".encode(),
            headers={"x-forwarded-for": forwarded},
        )
        assert answer.status_code == 200, answer.text
    refused = await post(
        http, created.webhook_token, headers={"x-forwarded-for": f"{TRADINGVIEW_ADDRESSES[0]}, 203.0.113.9"}
    )
    assert refused.status_code == 403
    assert refused.json() == {"success": False, "error": "ip_not_allowed"}


async def test_cidr_allowlist_admits_addresses_inside_the_networks(http, users) -> None:
    created = await create_user(users, ip_allowlist=["198.51.100.0/24", "2001:db8::/32"])
    admitted = ["198.51.100.1", "198.51.100.254", "2001:db8::7", "::ffff:198.51.100.9"]
    for index, address in enumerate(admitted):
        answer = await post(
            http, created.webhook_token, f"ok {index}".encode(), headers={"x-forwarded-for": address}
        )
        assert answer.status_code == 200, (address, answer.text)
    for address in ("198.51.101.1", "2001:db9::1", "10.0.0.1"):
        answer = await post(http, created.webhook_token, headers={"x-forwarded-for": address})
        assert answer.status_code == 403, address


async def test_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(
    untrusting_edge_url, users
) -> None:
    created = await create_user(users, ip_allowlist=["tradingview"])
    async with httpx.AsyncClient(base_url=untrusting_edge_url) as client:
        # The socket peer is 127.0.0.1; claiming to be TradingView in a header changes nothing.
        answer = await post(
            client, created.webhook_token, headers={"x-forwarded-for": TRADINGVIEW_ADDRESSES[0]}
        )
    assert answer.status_code == 403


async def test_fifty_parallel_posts_against_a_quota_of_ten_accept_exactly_ten(http, users, db) -> None:
    created = await create_user(users, plan=resources_pb2.PLAN_PREMIUM, signals_quota=10)
    answers = await asyncio.gather(
        *(post(http, created.webhook_token, f"BINANCE:BTCUSDT {index}".encode()) for index in range(50))
    )
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200] * 10 + [429] * 40
    assert {answer.json()["error"] for answer in answers if answer.status_code == 429} == {"quota_exceeded"}
    user_id = uuid.UUID(created.user.user_id)
    assert await db.fetchval("SELECT count(*) FROM signals WHERE user_id = $1", user_id) == 10
    assert await db.fetchval("SELECT signals_used FROM users WHERE id = $1", user_id) == 10
    refusals = await audit_rows(db, "user_id = $1 AND reason = 'QUOTA_EXCEEDED'", user_id, at_least=40)
    assert len(refusals) == 40


async def test_exhausted_quota_is_429_quota_exceeded_until_the_month_rolls(http, users, db) -> None:
    created = await create_user(users, signals_quota=1)
    user_id = uuid.UUID(created.user.user_id)
    assert (await post(http, created.webhook_token)).status_code == 200
    refused = await post(http, created.webhook_token, b"BINANCE:BTCUSDT another")
    assert refused.status_code == 429
    assert refused.json() == {"success": False, "error": "quota_exceeded"}
    assert int(refused.headers["retry-after"]) > 0

    # The month turns: the next signal is counted against a fresh quota that resets a month later.
    await db.execute("UPDATE users SET quota_reset_at = now() - interval '1 second' WHERE id = $1", user_id)
    assert (await post(http, created.webhook_token, b"BINANCE:BTCUSDT new month")).status_code == 200
    row = await db.fetchrow("SELECT signals_used, quota_reset_at FROM users WHERE id = $1", user_id)
    now = datetime.now(UTC)
    assert row["signals_used"] == 1
    assert row["quota_reset_at"] > now
    assert row["quota_reset_at"].astimezone(UTC).day == 1
    assert row["quota_reset_at"] - now <= timedelta(days=31)


async def test_identical_resend_is_a_duplicate_and_lookalikes_are_kept(http, users, db) -> None:
    created = await create_user(users)
    first = (await post(http, created.webhook_token)).json()
    again = (await post(http, created.webhook_token)).json()
    assert again["duplicate"] is True
    assert again["signal_id"] == first["signal_id"]
    lookalikes = [SAMPLE.replace(b"67,890.50", b"67,890.60"), SAMPLE.replace(b"14:30:00Z", b"14:45:00Z")]
    for body in lookalikes:
        kept = (await post(http, created.webhook_token, body)).json()
        assert kept["duplicate"] is False
    user_id = uuid.UUID(created.user.user_id)
    assert await db.fetchval("SELECT count(*) FROM signals WHERE user_id = $1", user_id) == 3
    assert await db.fetchval("SELECT signals_used FROM users WHERE id = $1", user_id) == 3

    # Outside the window (60 s by default) the same body is a new alert.
    await db.execute(
        "UPDATE signals SET created_at = created_at - interval '61 seconds' WHERE user_id = $1", user_id
    )
    later = (await post(http, created.webhook_token)).json()
    assert later["duplicate"] is False
    assert later["signal_id"] != first["signal_id"]


async def test_parallel_identical_resends_create_one_signal(http, users, db) -> None:
    created = await create_user(users)
    answers = [
        answer.json()
        for answer in await asyncio.gather(*(post(http, created.webhook_token) for _ in range(5)))
    ]
    assert len({answer["signal_id"] for answer in answers}) == 1
    assert sorted(answer["duplicate"] for answer in answers) == [False, True, True, True, True]
    user_id = uuid.UUID(created.user.user_id)
    assert await db.fetchval("SELECT count(*) FROM signals WHERE user_id = $1", user_id) == 1
    duplicates = await audit_rows(db, "user_id = $1 AND outcome = 'duplicate'", user_id, at_least=4)
    assert len(duplicates) == 4
    # A duplicate keeps its body (matched by idempotency key, it may differ from the stored signal's).
    assert {row["body"] for row in duplicates} == {SAMPLE}


async def test_every_refusal_kind_is_audited(http, users, db) -> None:
    """Each refusal lands in audit_logs with what is known about the caller, and never the token."""
    disabled = await create_user(users)
    await update_user(users, disabled.user.user_id, webhook_enabled=False)
    fenced = await create_user(users, ip_allowlist=["tradingview"])
    spent = await create_user(users, signals_quota=1)
    assert (await post(http, spent.webhook_token)).status_code == 200
    oversize = await create_user(users)

    unknown_token = "whk_" + "Z" * 43
    cases = [
        ("UNKNOWN_TOKEN", None, unknown_token, SAMPLE, 404),
        ("WEBHOOK_DISABLED", disabled, disabled.webhook_token, SAMPLE, 403),
        ("IP_NOT_ALLOWED", fenced, fenced.webhook_token, SAMPLE, 403),
        ("QUOTA_EXCEEDED", spent, spent.webhook_token, b"BINANCE:BTCUSDT over", 429),
        ("BODY_TOO_LARGE", oversize, oversize.webhook_token, b"x" * (64 * 1024 + 1), 413),
    ]
    for reason, owner, token, body, status in cases:
        agent = f"audit-probe-{uuid.uuid4()}"
        address = fresh_address()
        answer = await post(http, token, body, headers={"user-agent": agent, "x-forwarded-for": address})
        assert answer.status_code == status, (reason, answer.text)
        [row] = await audit_rows(db, "user_agent = $1", agent)
        assert row["outcome"] == "refused"
        assert row["reason"] == reason
        assert row["user_id"] == (uuid.UUID(owner.user.user_id) if owner else None)
        assert row["source_ip"] == address
        assert row["latency_ms"] >= 0
        assert row["created_at"] is not None
        assert row["body_sha256"] == hashlib.sha256(body[: 64 * 1024]).hexdigest()
        # Refusals anyone can repeat in bulk keep the body's size and hash only.
        summarised = reason in ("UNKNOWN_TOKEN", "QUOTA_EXCEEDED")
        assert row["body"] == (None if summarised else body[: 64 * 1024])
        assert row["repeat_count"] == 1
        assert row["body_size"] == len(body)
        assert token not in repr(dict(row))


async def test_plan_rate_limit_answers_429_with_retry_after(strict_edge_url, users, db) -> None:
    created = await create_user(users, plan=resources_pb2.PLAN_FREE)
    async with httpx.AsyncClient(base_url=strict_edge_url) as client:
        accepted = [
            await post(client, created.webhook_token, f"BINANCE:BTCUSDT {index}".encode())
            for index in range(3)
        ]
        limited = await post(client, created.webhook_token, b"BINANCE:BTCUSDT 3")
    assert [answer.status_code for answer in accepted] == [200, 200, 200]
    assert limited.status_code == 429
    assert limited.json() == {"success": False, "error": "rate_limited"}
    # The free plan's strict rate here is one webhook per 1000 s.
    assert 900 <= int(limited.headers["retry-after"]) <= 1000
    [row] = await audit_rows(db, "user_id = $1 AND reason = 'RATE_LIMITED'", uuid.UUID(created.user.user_id))
    assert row["outcome"] == "refused"


async def test_plan_rate_limit_is_exact_under_concurrency(strict_edge_url, users, db) -> None:
    """Concurrent webhooks meet in shared transactions; the limit is kept under the user's row lock."""
    created = await create_user(users, plan=resources_pb2.PLAN_FREE)
    source = fresh_address()
    async with httpx.AsyncClient(base_url=strict_edge_url, limits=httpx.Limits(max_connections=30)) as client:
        answers = await asyncio.gather(
            *(
                post(
                    client,
                    created.webhook_token,
                    f"BINANCE:ETHUSDT {index}".encode(),
                    headers={"x-forwarded-for": source},
                )
                for index in range(30)
            )
        )
    statuses = sorted(answer.status_code for answer in answers)
    # The strict free plan admits a burst of 3, then one webhook per 1000 s.
    assert statuses == [200] * 3 + [429] * 27
    rows = await audit_rows(
        db, "user_id = $1 AND reason = 'RATE_LIMITED'", uuid.UUID(created.user.user_id), counted=27
    )
    # Repeats from one source within a minute share a row (two when the minute turned meanwhile).
    assert sum(row["repeat_count"] for row in rows) == 27
    assert len(rows) <= 2
    assert {row["body"] for row in rows} == {None}


async def test_unknown_tokens_from_one_address_are_slowed_but_known_ones_are_not(
    strict_edge_url, users, db
) -> None:
    address = fresh_address()
    agent = f"token-guesser-{uuid.uuid4()}"
    created = await create_user(users, plan=resources_pb2.PLAN_PREMIUM)
    async with httpx.AsyncClient(base_url=strict_edge_url) as client:
        guesses = [
            await post(
                client,
                f"whk_{uuid.uuid4().hex}{'A' * 11}",
                headers={"x-forwarded-for": address, "user-agent": agent},
            )
            for _ in range(STRICT_UNKNOWN_TOKEN_BURST + 2)
        ]
        known = await post(client, created.webhook_token, headers={"x-forwarded-for": address})
    statuses = [answer.status_code for answer in guesses]
    assert statuses == [404] * STRICT_UNKNOWN_TOKEN_BURST + [429, 429]
    assert int(guesses[-1].headers["retry-after"]) > 0
    assert known.status_code == 200
    rows = await audit_rows(db, "user_agent = $1", agent, counted=len(guesses))
    # Repeats from one source within a minute share a row (two when the minute turned meanwhile).
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["reason"]] = counts.get(row["reason"], 0) + row["repeat_count"]
    assert counts == {"UNKNOWN_TOKEN": STRICT_UNKNOWN_TOKEN_BURST, "RATE_LIMITED": 2}
    assert len(rows) <= 4
    assert all(row["user_id"] is None and row["source_ip"] == address for row in rows)


async def test_list_signals_after_edge_posts_returns_exactly_the_accepted(http, users, signals) -> None:
    created = await create_user(users)
    ids = [
        (await post(http, created.webhook_token, f"BINANCE:SOLUSDT {index}".encode())).json()["signal_id"]
        for index in range(3)
    ]
    listed = await signals.ListSignals(signal_service_pb2.ListSignalsRequest(user_id=created.user.user_id))
    assert sorted(signal.signal_id for signal in listed.signals) == sorted(ids)
