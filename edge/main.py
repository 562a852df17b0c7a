"""`alerts serve edge`: the Litestar app under uvicorn (uvloop, httptools), draining on SIGTERM."""

from __future__ import annotations

from typing import Any

import uvicorn

from edge.settings import EdgeSettings, get_settings
from mesh.logging import configure_logging


def server_options(settings: EdgeSettings) -> dict[str, Any]:
    """How uvicorn runs the edge; bench/ serves its floor app with the very same options."""
    return {
        "host": settings.edge_host,
        "port": settings.edge_port,
        "workers": settings.edge_workers,
        "loop": "uvloop",
        # httptools with a deadline and a size cap on request heads; by import path, as worker processes
        # import it themselves.
        "http": "edge.http_protocol:BoundedHttpToolsProtocol",
        "log_config": None,
        "access_log": False,
        # uvicorn would otherwise believe X-Forwarded-For from loopback peers; edge.client_ip alone decides,
        # from ALERTS_TRUSTED_PROXIES.
        "proxy_headers": False,
        "timeout_graceful_shutdown": 10,
        # Slowloris: an idle kept-alive connection is dropped after this long (a new one, and one
        # trickling its head, by the protocol's header-read deadline).
        "timeout_keep_alive": settings.keep_alive_timeout_seconds,
        "limit_concurrency": settings.max_connections,
    }


def run() -> None:
    settings = get_settings()
    configure_logging("edge", settings.log_level)
    uvicorn.run("edge.app:app_from_environment", factory=True, **server_options(settings))
