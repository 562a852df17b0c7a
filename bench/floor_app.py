"""The HTTP floor: a bare Litestar route answering 200, served by uvicorn with the edge's own options.

What the same machine does with no work at all behind the route; bench_ingest.py compares the edge to it.

    ALERTS_EDGE_PORT=8099 .venv/bin/python bench/floor_app.py
"""

from __future__ import annotations

import uvicorn
from litestar import Litestar, get, post

from edge.main import server_options
from edge.settings import get_settings


@post("/webhook/u/{token:str}", status_code=200)
async def bare_webhook(token: str) -> dict[str, bool]:
    return {"success": True}


@get("/health/live")
async def live() -> dict[str, str]:
    return {"status": "ok"}


def create_floor_app() -> Litestar:
    return Litestar(route_handlers=[bare_webhook, live], openapi_config=None)


if __name__ == "__main__":
    uvicorn.run("floor_app:create_floor_app", factory=True, app_dir="bench", **server_options(get_settings()))
