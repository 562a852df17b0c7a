"""The chart stub served on a loopback port, a browser pool on the test session's event loop, and what
tests look for in the stub's pictures."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from PIL import Image

from capture_service.browser import BrowserPool
from capture_service.chart_stub import create_chart_stub_app
from tests.support import asgi_app_in_thread

VIEWPORT = (1280, 720)
# The stub's candle colours and the legend ("SYMBOL · INTERVAL · STUB") in the pane's top-left corner.
CANDLE_UP = (0x26, 0xA6, 0x9A)
CANDLE_DOWN = (0xEF, 0x53, 0x50)
LEGEND_TEXT = (0x13, 0x17, 0x22)
LEGEND_BOX = (0, 0, 420, 26)


def picture(png: bytes) -> Image.Image:
    return Image.open(io.BytesIO(png)).convert("RGB")


def count(image: Image.Image, color: tuple[int, int, int]) -> int:
    return sum(1 for pixel in image.get_flattened_data() if pixel == color)


@dataclass
class ChartStub:
    base_url: str

    async def requests(self) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=self.base_url) as client:
            answer = await client.get("/_stub/requests")
            answer.raise_for_status()
            return answer.json()

    async def clear(self) -> None:
        async with httpx.AsyncClient(base_url=self.base_url) as client:
            (await client.delete("/_stub/requests")).raise_for_status()

    async def configure(self, **settings: Any) -> None:
        async with httpx.AsyncClient(base_url=self.base_url) as client:
            (await client.post("/_stub/mode", json=settings)).raise_for_status()


@pytest.fixture(scope="session")
def chart_stub_server() -> Iterator[str]:
    """The stub in a thread of this process."""
    with asgi_app_in_thread(create_chart_stub_app()) as url:
        yield url


@pytest.fixture
async def chart_stub(chart_stub_server: str) -> AsyncIterator[ChartStub]:
    stub = ChartStub(chart_stub_server)
    await stub.configure(mode="ok", page="light", render_delay_ms=300)
    await stub.clear()
    yield stub
    await stub.configure(mode="ok", page="light", render_delay_ms=300)


@pytest.fixture(scope="session")
async def shared_pool() -> AsyncIterator[BrowserPool]:
    pool = BrowserPool(viewport=VIEWPORT)
    await pool.start()
    yield pool
    await pool.close()


@pytest.fixture
async def own_pool() -> AsyncIterator[BrowserPool]:
    """A pool no other test shares, for tests that crash or kill its browser."""
    pool = BrowserPool(viewport=VIEWPORT)
    await pool.start()
    yield pool
    await asyncio.wait_for(pool.close(), timeout=30)
