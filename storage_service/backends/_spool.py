"""Receiving an upload completely before a cloud backend sends it anywhere.

Cloud object metadata is fixed when an upload starts, and the SHA-256 is only known at the end of the
stream; spooling first means every object is created with its complete metadata, and a client that goes
away mid-stream never reaches the bucket at all.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import IO

from storage_service.backends._threads import run_blocking

# Uploads up to this size stay in memory; larger ones roll over to a temporary file.
SPOOL_MEMORY_BYTES = 8 * 1024 * 1024


@dataclass(slots=True)
class SpooledUpload:
    file: IO[bytes]
    size_bytes: int
    sha256: str

    def close(self) -> None:
        self.file.close()


async def spool(chunks: AsyncIterator[bytes]) -> SpooledUpload:
    """Reads every chunk into a rewound temporary file; the caller closes the result."""
    file = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES)  # noqa: SIM115 - closed by the caller
    try:
        hasher = hashlib.sha256()
        size = 0
        async for chunk in chunks:
            await run_blocking(file.write, chunk)
            hasher.update(chunk)
            size += len(chunk)
        await run_blocking(file.seek, 0)
    except BaseException:
        file.close()
        raise
    return SpooledUpload(file=file, size_bytes=size, sha256=hasher.hexdigest())
