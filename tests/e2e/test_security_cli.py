"""`alerts keys rotate` and `alerts audit prune` as real processes, each on a database of its own (they act
on every row, so they must not share the session's)."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from alerts.processes import alerts_argv
from mesh.crypto import CookieCipher, CookieCipherError, generate_key_entry
from signal_service.database import Database, create_engine
from signal_service.settings import SignalSettings
from signal_service.users.service import UserManager
from tests.e2e.stacks import child_env, fresh_database

pytestmark = pytest.mark.e2e


@pytest.fixture
def own_database(database_url: str) -> Iterator[str]:
    with fresh_database(database_url) as url:
        yield url


def cipher_of(*entries: str) -> CookieCipher:
    return CookieCipher.from_settings(SignalSettings(cookie_keys=",".join(entries), _env_file=None))


async def alerts(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *alerts_argv(*args), env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def store_sessions(database_url: str, cipher: CookieCipher, count: int) -> dict[str, dict[str, str]]:
    """Users with a TradingView session each, encrypted by `cipher`; returns their plaintexts by user id."""
    database = Database(create_engine(database_url, pool_size=2))
    manager = UserManager(database=database, settings=SignalSettings(_env_file=None), cipher=cipher)
    plaintexts = {}
    try:
        for _ in range(count):
            issued = await manager.create(
                external_id="",
                plan="free",
                default_chart_id="",
                signals_quota=0,
                ip_allowlist=[],
                notification_preferences={},
            )
            user_id = str(issued.view.user.id)
            session = {"sessionid": f"sid-{uuid.uuid4().hex}", "sessionid_sign": f"sign-{uuid.uuid4().hex}"}
            await manager.set_tradingview_session(user_id, session["sessionid"], session["sessionid_sign"])
            plaintexts[user_id] = session
    finally:
        await database.dispose()
    return plaintexts


async def stored_ciphertexts(database_url: str) -> dict[str, bytes]:
    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        rows = await connection.fetch(
            "SELECT user_id, tv_session_ciphertext FROM user_config WHERE tv_session_ciphertext IS NOT NULL"
        )
    finally:
        await connection.close()
    return {str(row["user_id"]): row["tv_session_ciphertext"] for row in rows}


async def test_keys_rotate_reencrypts_every_session_to_the_newest_key(service_env, own_database) -> None:
    key_a, key_b, key_c = generate_key_entry("a"), generate_key_entry("b"), generate_key_entry("c")
    plaintexts = await store_sessions(own_database, cipher_of(key_a), 5)
    orphan = await store_sessions(own_database, cipher_of(key_c), 1)
    env = child_env(service_env, ALERTS_DATABASE_URL=own_database, ALERTS_COOKIE_KEYS=f"{key_b},{key_a}")

    code, out, err = await alerts(env, "keys", "rotate", "--batch-size", "2")
    assert code == 1, (out, err)  # the session under key c, which is not configured, is reported
    assert "sessions examined: 6; re-encrypted to 'b': 5" in out
    assert next(iter(orphan)) in err

    rows = await stored_ciphertexts(own_database)
    only_b, only_a = cipher_of(key_b), cipher_of(key_a)
    for user_id, session in plaintexts.items():
        assert json.loads(only_b.decrypt(rows[user_id])) == session
        with pytest.raises(CookieCipherError):
            only_a.decrypt(rows[user_id])
    # The unreadable row is left exactly as it was.
    assert json.loads(cipher_of(key_c).decrypt(rows[next(iter(orphan))])) == next(iter(orphan.values()))
    for secret in (value for session in plaintexts.values() for value in session.values()):
        assert secret not in out + err

    code, out, _ = await alerts(env, "keys", "rotate")
    assert "re-encrypted to 'b': 0" in out
    assert await stored_ciphertexts(own_database) == rows


async def test_keys_generate_prints_a_usable_entry(service_env) -> None:
    code, out, _ = await alerts(child_env(service_env), "keys", "generate", "k2026")
    assert code == 0
    entry = out.strip()
    assert entry.startswith("k2026:")
    cipher = cipher_of(entry)
    assert cipher.decrypt(cipher.encrypt(b"x")) == b"x"


async def test_audit_prune_deletes_rows_past_the_retention(service_env, own_database) -> None:
    now = datetime.now(UTC)
    ages = {"ancient": 400, "expired": 91, "recent": 89, "fresh": 0}
    connection = await asyncpg.connect(own_database.replace("+asyncpg", ""))
    try:
        for label, days in ages.items():
            await connection.execute(
                "INSERT INTO audit_logs (created_at, outcome, reason) VALUES ($1, 'refused', $2)",
                now - timedelta(days=days, minutes=1),
                label,
            )
        env = child_env(service_env, ALERTS_DATABASE_URL=own_database)
        code, out, err = await alerts(env, "audit", "prune")
        assert code == 0, err
        assert "older than 90 days deleted: 2" in out
        left = {row["reason"] for row in await connection.fetch("SELECT reason FROM audit_logs")}
        assert left == {"recent", "fresh"}

        code, out, _ = await alerts(env | {"ALERTS_AUDIT_RETENTION_DAYS": "30"}, "audit", "prune")
        assert "older than 30 days deleted: 1" in out
        code, out, _ = await alerts(env, "audit", "prune", "--retention-days", "1")
        assert "older than 1 days deleted: 0" in out
        assert {row["reason"] for row in await connection.fetch("SELECT reason FROM audit_logs")} == {"fresh"}
    finally:
        await connection.close()


async def test_keys_rotate_reencrypts_notification_secrets_too(service_env, own_database) -> None:
    key_a, key_b = generate_key_entry("a"), generate_key_entry("b")
    secret = "whsec_" + base64.b64encode(uuid.uuid4().bytes * 2).decode()
    database = Database(create_engine(own_database, pool_size=2))
    manager = UserManager(database=database, settings=SignalSettings(_env_file=None), cipher=cipher_of(key_a))
    try:
        issued = await manager.create(
            external_id="",
            plan="free",
            default_chart_id="",
            signals_quota=0,
            ip_allowlist=[],
            notification_preferences={"webhook": {"url": "https://example.com/hook", "secret": secret}},
        )
    finally:
        await database.dispose()
    env = child_env(service_env, ALERTS_DATABASE_URL=own_database, ALERTS_COOKIE_KEYS=f"{key_b},{key_a}")

    code, out, err = await alerts(env, "keys", "rotate")
    assert code == 0, (out, err)
    assert "notification secrets examined: 1; re-encrypted to 'b': 1" in out
    assert secret not in out + err
    connection = await asyncpg.connect(own_database.replace("+asyncpg", ""))
    try:
        sealed = await connection.fetchval(
            "SELECT notification_secrets_ciphertext FROM user_config WHERE user_id = $1", issued.view.user.id
        )
    finally:
        await connection.close()
    assert json.loads(cipher_of(key_b).decrypt(sealed)) == {"webhook_secret": secret}
