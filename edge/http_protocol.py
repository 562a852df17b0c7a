"""uvicorn's httptools protocol with a deadline and a size cap on every request head.

uvicorn arms its keep-alive timer only after a response, so a connection that never sends a complete
request head (idle from the start, or trickling a header a byte at a time) is held for ever, and httptools
buffers a header of any size. Here a request head must be complete within ALERTS_HEADER_READ_TIMEOUT_SECONDS
of the connection opening (or of the next request's first byte on a kept-alive connection), and within
ALERTS_MAX_REQUEST_HEAD_BYTES, else the connection is closed (431 for the size). The size is checked after
each read, so a head may overshoot it by one read (at most 256 KiB with uvloop) before it is refused; that
bounds memory, which is what the cap is for. The finer per-route limits on header count and bytes are the
app's (edge.header_limits). uvicorn's h11 settings do not apply: the edge runs httptools.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from edge.settings import EdgeSettings, get_settings

_HEAD_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: application/json\r\n"
    b"content-length: 45\r\n"
    b"connection: close\r\n"
    b"\r\n"
    b'{"success":false,"error":"headers_too_large"}'
)

# How long a refused connection's remaining bytes are read and dropped before it is closed.
_LINGER_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class HeadLimits:
    timeout_seconds: float
    max_bytes: int

    @classmethod
    def from_settings(cls, settings: EdgeSettings) -> HeadLimits:
        return cls(
            timeout_seconds=settings.header_read_timeout_seconds, max_bytes=settings.max_request_head_bytes
        )


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """Named by import path in uvicorn's options (worker processes import it), so its limits come from the
    environment's settings unless a subclass sets `head_limits` (tests serving in-process)."""

    head_limits: ClassVar[HeadLimits | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limits = self.head_limits or HeadLimits.from_settings(get_settings())
        self._head_timeout = limits.timeout_seconds
        self._max_head_bytes = limits.max_bytes
        # Bytes received while the current head is incomplete; None once it is complete.
        self._head_bytes: int | None = 0
        self._head_deadline: asyncio.TimerHandle | None = None
        # After a 431 the rest of the head is read and dropped until the connection closes.
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        reading_head = self._head_bytes is not None
        super().data_received(data)
        # Counted only when the head is still incomplete after the chunk, so a body arriving in the same
        # chunk as its head never counts; what is counted was all head.
        if reading_head and self._head_bytes is not None:
            self._head_bytes += len(data)
            if self._head_bytes > self._max_head_bytes and not self.transport.is_closing():
                self._refuse_head()

    def _refuse_head(self) -> None:
        """431, then a lingering close: closing with the client's bytes still unread would send a reset,
        which makes the client's kernel discard the 431 before it is read."""
        self.logger.warning("Request head over %d bytes refused.", self._max_head_bytes)
        self._refused = True
        self._stop_head_deadline()
        self.transport.write(_HEAD_TOO_LARGE)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(_LINGER_SECONDS, self.transport.close)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._await_head()

    def on_headers_complete(self) -> None:
        self._stop_head_deadline()
        self._head_bytes = None
        super().on_headers_complete()

    def _await_head(self) -> None:
        if self._head_bytes is None:
            self._head_bytes = 0
        # Started once per head: bytes trickling in do not push it back.
        if self._head_deadline is None:
            self._head_deadline = self.loop.call_later(self._head_timeout, self._head_timed_out)

    def _stop_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing():
            self.transport.close()
