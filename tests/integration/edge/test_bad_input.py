"""Hostile HTTP at the real edge: oversize and slow bodies, header floods, path tricks in the token,
homoglyphs, SQL metacharacters. Nothing answers 500 and nothing accepted is lost or altered."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from urllib.parse import quote, urlsplit

import httpx
import pytest

from apidevs.alerts.v1 import signal_service_pb2
from tests.integration.edge.conftest import LOOPBACK_PROXY, audit_rows, edge_settings, running_edge
from tests.integration.edge.test_webhook_security import fresh_address
from tests.support import SAMPLE, create_user

SQL_METACHARACTERS = "'; DROP TABLE signals; -- \" \\ %_ $1 /* */ \\x00 ' OR '1'='1"


@pytest.fixture(scope="module")
async def impatient_edge_url(service_env: dict[str, str], signal_server: str) -> AsyncIterator[str]:
    """An edge that waits at most half a second for a request body."""
    settings = edge_settings(
        service_env, signal_server, trusted_proxies=[LOOPBACK_PROXY], body_read_timeout_seconds=0.5
    )
    async with running_edge(settings) as url:
        yield url


async def raw_exchange(url: str, request_head: bytes, body_parts: list[bytes], pause: float) -> bytes:
    """Sends the head and body parts with a pause between parts; returns everything the server sent."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    received = asyncio.create_task(asyncio.wait_for(reader.read(), timeout=10))
    try:
        writer.write(request_head)
        for part in body_parts:
            if received.done():
                break
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(pause)
        return await received
    finally:
        writer.close()


async def test_slow_body_is_cut_with_408_and_the_connection_closed(impatient_edge_url, users, db) -> None:
    created = await create_user(users)
    agent = f"trickler-{uuid.uuid4()}"
    head = (
        f"POST /webhook/u/{created.webhook_token} HTTP/1.1\r\nHost: edge\r\nUser-Agent: {agent}\r\n"
        # A source of its own: refusals of callers the service cannot place merge per source and minute.
        f"X-Forwarded-For: {fresh_address()}\r\n"
        "Content-Type: text/plain\r\nContent-Length: 1000\r\n\r\n"
    ).encode()
    # One byte every 0.2 s: the connection never goes idle, so only a body deadline stops it.
    answer = await raw_exchange(impatient_edge_url, head, [b"x"] * 20, pause=0.2)
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 408 Request Timeout"
    assert b'"error":"body_timeout"' in rest
    assert b"connection: close" in rest.lower()
    [row] = await audit_rows(db, "user_agent = $1", agent)
    assert (row["outcome"], row["reason"]) == ("refused", "BODY_TIMEOUT")


async def test_a_body_that_arrives_in_time_is_accepted_by_the_impatient_edge(
    impatient_edge_url, users
) -> None:
    created = await create_user(users)
    async with httpx.AsyncClient(base_url=impatient_edge_url) as client:
        answer = await client.post(f"/webhook/u/{created.webhook_token}", content=SAMPLE)
    assert answer.status_code == 200


async def test_body_over_64_kib_is_413_however_large(http, users, db) -> None:
    created = await create_user(users)
    for size in (64 * 1024 + 1, 5 * 1024 * 1024):
        answer = await http.post(f"/webhook/u/{created.webhook_token}", content=b"y" * size)
        assert answer.status_code == 413
        assert answer.json() == {"success": False, "error": "body_too_large"}
    rows = await audit_rows(db, "user_id = $1", uuid.UUID(created.user.user_id), at_least=2)
    assert [row["reason"] for row in rows] == ["BODY_TOO_LARGE", "BODY_TOO_LARGE"]
    assert all(len(row["body"]) == 64 * 1024 for row in rows)
    assert rows[0]["body_size"] == 64 * 1024 + 1
    assert rows[1]["body_size"] > 64 * 1024


async def test_exactly_64_kib_is_accepted(http, users) -> None:
    created = await create_user(users)
    answer = await http.post(f"/webhook/u/{created.webhook_token}", content=b"z" * (64 * 1024))
    assert answer.status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {f"x-flood-{index}": "v" for index in range(2000)},
        # Over the app's 16 KiB, under the protocol's 64 KiB cap on a request head (see below).
        {"x-huge": "v" * 40_000},
    ],
    ids=["2000-headers", "40-KB-header"],
)
async def test_header_floods_are_refused_with_431_and_audited(http, users, db, headers) -> None:
    created = await create_user(users)
    agent = f"flooder-{uuid.uuid4()}"
    answer = await http.post(
        f"/webhook/u/{created.webhook_token}",
        content=SAMPLE,
        # A source of its own: refusals of callers the service cannot place merge per source and minute.
        headers={**headers, "user-agent": agent, "x-forwarded-for": fresh_address()},
    )
    assert answer.status_code == 431
    assert answer.json() == {"success": False, "error": "headers_too_large"}
    [row] = await audit_rows(db, "user_agent = $1", agent)
    assert (row["outcome"], row["reason"]) == ("refused", "HEADERS_TOO_LARGE")
    assert row["body"] is None
    assert created.webhook_token not in repr(dict(row))


@pytest.mark.parametrize(
    "path",
    [
        "/webhook/u/..%2F..%2Fetc%2Fpasswd",
        "/webhook/u/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/webhook/u/..%5C..%5Cwindows",
        "/webhook/u/%00",
        "/webhook/u/whk_%00" + "A" * 43,
        "/webhook/u/" + "A" * 8000,
        "/webhook/u/%ff%fe%fd",
        "/webhook/u/%25%32%65%25%32%65",
    ],
)
async def test_path_tricks_in_the_token_are_plain_not_found(http, path) -> None:
    answer = await http.post(path, content=SAMPLE)
    assert answer.status_code == 404


async def test_unicode_homoglyphs_of_a_real_token_are_not_found(http, users) -> None:
    created = await create_user(users)
    token = created.webhook_token
    homoglyphs = {
        "A": "\u0391",  # Greek capital alpha
        "B": "\u0392",  # Greek capital beta
        "E": "\u0415",  # Cyrillic capital ie
        "H": "\u041d",  # Cyrillic capital en
        "K": "\u039a",  # Greek capital kappa
        "M": "\u041c",  # Cyrillic capital em
        "O": "\u041e",  # Cyrillic capital o
        "P": "\u0420",  # Cyrillic capital er
        "T": "\u0422",  # Cyrillic capital te
        "X": "\u03a7",  # Greek capital chi
        "a": "\u0430",  # Cyrillic small a
        "c": "\u0441",  # Cyrillic small es
        "e": "\u0435",  # Cyrillic small ie
        "o": "\u03bf",  # Greek small omicron
        "p": "\u0440",  # Cyrillic small er
        "x": "\u0445",  # Cyrillic small ha
        "_": "\uff3f",  # fullwidth low line
        "-": "\u2010",  # hyphen
    }
    # A random token need not hold any letter with a well-known homoglyph, so every other character is
    # forged with its fullwidth form, which NFKC folds back to the original.
    forged_positions = {token.index(character, 4) for character in set(token[4:])}
    for index in sorted(forged_positions):
        plain = token[index]
        lookalike = homoglyphs.get(plain, chr(ord(plain) + 0xFEE0))
        forged = token[:index] + lookalike + token[index + 1 :]
        answer = await http.post(f"/webhook/u/{quote(forged)}", content=f"{plain} forged".encode())
        assert answer.status_code == 404, forged
    fullwidth = "".join(chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch for ch in token)
    assert (await http.post(f"/webhook/u/{quote(fullwidth)}", content=SAMPLE)).status_code == 404
    assert (await http.post(f"/webhook/u/{token}", content=SAMPLE)).status_code == 200


async def test_sql_metacharacters_in_every_field_are_stored_verbatim(http, users, signals, db) -> None:
    created = await create_user(users)
    text = f"Ticker: BINANCE:BTCUSDT\nPrice: 1\nSignal: {SQL_METACHARACTERS}\nNote: {SQL_METACHARACTERS}"
    body = text.encode()
    agent = f"agent {SQL_METACHARACTERS} {uuid.uuid4()}"
    content_type = f'text/plain; x="{SQL_METACHARACTERS.replace(chr(92), "")}"'
    answer = await http.post(
        f"/webhook/u/{created.webhook_token}",
        params={"chart": "layout_A-1", "note": SQL_METACHARACTERS},
        content=body,
        headers={"user-agent": agent, "content-type": content_type},
    )
    assert answer.status_code == 200, answer.text
    signal = await signals.GetSignal(
        signal_service_pb2.GetSignalRequest(signal_id=answer.json()["signal_id"])
    )
    assert signal.raw_text == body.decode()
    assert signal.chart_id == "layout_A-1"
    assert signal.content_type == content_type
    [row] = await audit_rows(db, "user_agent = $1", agent)
    # An accepted call's body is the signal's raw_text above; its audit row keeps the hash, not a copy.
    assert (row["body"], row["body_sha256"]) == (None, hashlib.sha256(body).hexdigest())
    assert row["content_type"] == content_type
    assert (
        await db.fetchval("SELECT count(*) FROM signals WHERE user_id = $1", uuid.UUID(signal.user_id)) == 1
    )


async def test_nul_characters_in_text_fields_do_not_break_storage(http, users, signals, db) -> None:
    created = await create_user(users)
    body = b'{"ticker": "BINANCE:BTC\\u0000USDT", "price": "1", "\\u0000key": "v\\u0000"}'
    answer = await http.post(
        f"/webhook/u/{created.webhook_token}",
        params={"chart": "abcd", "extra": "\x00"},
        content=body,
        headers={"content-type": "application/json"},
    )
    assert answer.status_code == 200, answer.text
    signal = await signals.GetSignal(
        signal_service_pb2.GetSignalRequest(signal_id=answer.json()["signal_id"])
    )
    assert signal.chart_id == "abcd"
    # The raw body keeps every byte, whatever the text columns could not hold.
    stored = await db.fetchval("SELECT raw_body FROM signals WHERE id = $1", uuid.UUID(signal.signal_id))
    assert stored == body
