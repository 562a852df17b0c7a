"""The signal viewer at ``/ui``: one server-rendered page and its static script and stylesheet.

The page holds no data when served. In the browser it asks for a user id and a user-scoped API key (or
reads them from the URL fragment, which never reaches a server or its logs), keeps them in
sessionStorage, and reads ``GET /api/users/{id}/signals`` and the ``/api/users/{id}/events`` SSE stream
with ``Authorization: Bearer``. The stream is read with fetch() rather than EventSource, which cannot send
headers: the key stays out of URLs, and so out of access logs and browser history.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import Any

from litestar import Response, get
from litestar.datastructures import CacheControlHeader
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Template
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig
from litestar.types import ControllerRouterHandler

UI_DIR = Path(__file__).with_name("ui")
STATIC_DIR = UI_DIR / "static"
STATIC_PATH = "/ui/static"

# Screenshot links are same-origin /media URLs with local storage, signed https URLs with GCS or S3.
_CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https: data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": _CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


@cache
def _asset_version(name: str) -> str:
    """A content hash per asset, so that the page can let browsers cache assets for good."""
    return hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:12]


def asset_url(name: str) -> str:
    return f"{STATIC_PATH}/{name}?v={_asset_version(name)}"


@get("/ui", include_in_schema=False, media_type="text/html")
async def signal_viewer() -> Template:
    return Template(
        template_name="viewer.html.j2",
        context={"script_url": asset_url("viewer.js"), "stylesheet_url": asset_url("viewer.css")},
        headers=PAGE_HEADERS,
    )


async def _harden_static(response: Response[Any]) -> Response[Any]:
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


static_files = create_static_files_router(
    path=STATIC_PATH,
    directories=[STATIC_DIR],
    name="ui-static",
    cache_control=CacheControlHeader(max_age=31_536_000, public=True),
    after_request=_harden_static,
)

route_handlers: list[ControllerRouterHandler] = [signal_viewer, static_files]


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    return TemplateConfig(directory=UI_DIR / "templates", engine=JinjaTemplateEngine)
