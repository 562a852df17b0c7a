"""A failed send, as the delivery ledger records it and the retry policy reads it."""

from __future__ import annotations

from notify_service.outbound import ForbiddenDestinationError


class DeliveryError(Exception):
    """`permanent`: the same send will fail again (a 4xx other than 429); `retry_after`: the provider
    said when to try again (a 429)."""

    def __init__(self, reason: str, *, permanent: bool, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.retry_after = retry_after


def transport_failure(exc: Exception) -> DeliveryError:
    """Network trouble, told without the URL (a bot token or a webhook token lives in it).

    A destination the guard refuses (notify_service.outbound) fails for good: it will resolve the same
    way next time, and trying again would only probe the address.
    """
    if isinstance(exc, ForbiddenDestinationError):
        return DeliveryError(f"forbidden destination: {exc}", permanent=True)
    return DeliveryError(f"unreachable: {type(exc).__name__}", permanent=False)


def status_failure(status: int, description: str, retry_after: float | None) -> DeliveryError:
    text = f"HTTP {status}: {description[:200]}" if description else f"HTTP {status}"
    if status == 429:
        return DeliveryError(text, permanent=False, retry_after=retry_after if retry_after else 1.0)
    return DeliveryError(text, permanent=400 <= status < 500 and status not in (408, 409, 425))
