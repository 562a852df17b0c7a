"""Running blocking storage calls off the event loop without letting cancellation outrun them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


async def run_blocking(func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Runs ``func`` in a worker thread; a cancelled caller first waits for the thread to finish.

    A thread cannot be interrupted, so without the wait the caller's cleanup (closing a file, aborting an
    upload) would race a write or part upload still in flight.
    """
    task = asyncio.ensure_future(asyncio.to_thread(func, *args, **kwargs))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        raise
