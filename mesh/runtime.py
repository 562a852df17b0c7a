"""Process-level tuning a server applies once it has started."""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Takes every object alive after start-up (modules, ORM mappings, generated protos, settings) out of
    the garbage collector's sight, so that a full collection scans only what requests allocate.

    A server process calls it once it is ready. Without it a full collection in the signal service took
    20-85 ms under load, stalling every call in flight (the periodic spikes in bench_ingest's steady p99).
    """
    gc.collect()
    gc.freeze()
