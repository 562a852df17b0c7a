"""What the provider stubs (Telegram, Discord) share: the calls they received and failures on demand.

``GET /_stub/requests`` lists the calls (``DELETE`` forgets them); ``POST /_stub/mode`` with
``{"mode": "429", "retry_after": 2}``, ``{"mode": "500"}`` or ``{"mode": "ok"}`` injects failures, and
``"count": N`` limits a mode to the next N calls, after which the stub answers normally again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import uvicorn
from litestar import Litestar, Request, delete, get, post
from litestar.datastructures import State
from litestar.exceptions import ValidationException
from litestar.params import JSONBody
from litestar.types import ControllerRouterHandler

MODES = ("ok", "429", "500")
_Answer = TypeVar("_Answer")
_MAX_RECORDED = 50_000


@dataclass
class FailureMode:
    mode: str = "ok"
    retry_after: int = 1
    calls_left: int | None = None

    def set(self, data: dict[str, Any]) -> dict[str, Any]:
        """Switches to the mode `data` asks for (ValidationException, answered 400, when it is wrong)."""
        mode = data.get("mode")
        if mode not in MODES:
            raise ValidationException("mode must be one of ok, 429, 500")
        retry_after, count = data.get("retry_after", 1), data.get("count")
        if not isinstance(retry_after, int) or isinstance(retry_after, bool) or retry_after < 1:
            raise ValidationException("retry_after must be a positive integer")
        if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
            raise ValidationException("count must be a positive integer")
        self.mode, self.retry_after, self.calls_left = mode, retry_after, count
        return {"mode": mode, "retry_after": retry_after, "count": count}

    def failure(self, answer: Callable[[int, int], _Answer]) -> _Answer | None:
        """What this call is answered when a failure mode is on, ``answer(status, retry_after)`` (429 or
        500), counting it against `count`; None when it goes through."""
        mode = self.mode
        if mode == "ok":
            return None
        if self.calls_left is not None:
            self.calls_left -= 1
            if self.calls_left <= 0:
                self.mode, self.calls_left = "ok", None
        return answer(int(mode), self.retry_after)


@dataclass
class StubRecord:
    """A stub's state under ``app.state.stub``: each stub extends it with what it answers from."""

    failures: FailureMode = field(default_factory=FailureMode)
    requests: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=_MAX_RECORDED))

    def clear(self) -> None:
        """Forgets the calls received (a stub extends it with what it counts from them)."""
        self.requests.clear()


def _record(request: Request[Any, Any, State]) -> StubRecord:
    record: StubRecord = request.app.state.stub
    return record


@get("/_stub/requests", sync_to_thread=False)
def list_requests(request: Request[Any, Any, State]) -> list[dict[str, Any]]:
    return list(_record(request).requests)


@delete("/_stub/requests", status_code=204, sync_to_thread=False)
def clear_requests(request: Request[Any, Any, State]) -> None:
    _record(request).clear()


@post("/_stub/mode", status_code=200, sync_to_thread=False)
def set_mode(request: Request[Any, Any, State], data: JSONBody[dict[str, Any]]) -> dict[str, Any]:
    return _record(request).failures.set(data)


def create_stub_app(route_handlers: list[ControllerRouterHandler], stub: StubRecord) -> Litestar:
    """A stub's app: its own routes, the ``/_stub/`` ones above, and `stub` as its state."""
    return Litestar(
        route_handlers=[*route_handlers, list_requests, clear_requests, set_mode],
        state=State({"stub": stub}),
        openapi_config=None,
    )


def serve_stub(app: Litestar, host: str, port: int) -> None:
    """Serves a stub until SIGTERM or SIGINT."""
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)
