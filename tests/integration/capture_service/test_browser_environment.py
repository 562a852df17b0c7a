"""Chromium as the process it really is: its environment holds no secret of the worker's, and its sandbox is
on wherever the kernel allows it (issue 19, finding 4)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from capture_service.browser import BrowserPool, sandbox_unavailable_reason
from capture_service.capture import chart_url
from tests.integration.capture_service.conftest import VIEWPORT, ChartStub

SECRETS = {
    "ALERTS_API_KEYS": "browser-env-test-api-key",
    "ALERTS_DATABASE_URL": "postgresql+asyncpg://alerts:browser-env-db-password@db/alerts",
    "ALERTS_REDIS_URL": "redis://:browser-env-redis-password@redis:6379/0",
    "ALERTS_SESSION_ENCRYPTION_KEY": "browser-env-encryption-key",
    "AWS_SECRET_ACCESS_KEY": "browser-env-aws-secret",
    "GOOGLE_APPLICATION_CREDENTIALS": "/secrets/browser-env-gcp.json",
}


@pytest.fixture
async def pool_started_among_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[BrowserPool, frozenset[int]]]:
    """A browser pool started with secrets in the environment, and the Chromium processes that were under
    this test process before it (other tests' stacks and pools, still running or still exiting)."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    others = frozenset(process.pid for process in chromium_processes())
    pool = BrowserPool(viewport=VIEWPORT)
    await pool.start()
    yield pool, others
    await pool.close()


def chromium_processes(others: frozenset[int] = frozenset()) -> list[psutil.Process]:
    """Every Chromium process under this test process but `others`: the browser, its renderers and
    helpers."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "chrom" in child.name() and child.pid not in others:
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def read_environments(processes: list[psutil.Process]) -> dict[int, bytes]:
    environments = {}
    for process in processes:
        try:
            environments[process.pid] = Path(f"/proc/{process.pid}/environ").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            continue
    return environments


async def test_chromium_environment_holds_no_secret(
    chart_stub: ChartStub, pool_started_among_secrets: tuple[BrowserPool, frozenset[int]]
) -> None:
    pool, others = pool_started_among_secrets
    async with pool.context([]) as context:
        await (await context.new_page()).goto(chart_url(chart_stub.base_url, "layout", "BINANCE:BTCUSDT"))
        environments = await asyncio.to_thread(read_environments, chromium_processes(others))

    assert len(environments) >= 2, "the browser and at least one renderer were read"
    # Scrubbed, not emptied: Chromium still finds its libraries and fonts.
    assert any(b"\0PATH=" in b"\0" + environ for environ in environments.values())
    for pid, environ in environments.items():
        names = {entry.split(b"=", 1)[0] for entry in environ.split(b"\0") if entry}
        assert not {name for name in names if name.startswith(b"ALERTS_")}, pid
        for secret in SECRETS.values():
            assert secret.encode() not in environ, (pid, secret)


async def test_chromium_uses_its_sandbox_unless_the_kernel_forbids_it(
    pool_started_among_secrets: tuple[BrowserPool, frozenset[int]],
) -> None:
    pool, others = pool_started_among_secrets
    reason = sandbox_unavailable_reason()
    [browser] = [
        process
        for process in chromium_processes(others)
        if not any(argument.startswith("--type=") for argument in process.cmdline())
    ]
    assert ("--no-sandbox" in browser.cmdline()) == (reason is not None), reason
    assert pool.launched.endswith("no sandbox" if reason else "sandboxed")
