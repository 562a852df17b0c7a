"""Failures on demand for the provider stubs (Telegram, Discord): ``POST /_stub/mode``.

``{"mode": "429", "retry_after": 2}``, ``{"mode": "500"}`` or ``{"mode": "ok"}``; ``"count": N`` limits a
mode to the next N calls, after which the stub answers normally again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar.exceptions import ValidationException

MODES = ("ok", "429", "500")


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

    def next_call(self) -> str:
        """The mode this call is answered in ("ok", "429" or "500"), counting it against `count`."""
        mode = self.mode
        if mode != "ok" and self.calls_left is not None:
            self.calls_left -= 1
            if self.calls_left <= 0:
                self.mode, self.calls_left = "ok", None
        return mode
