"""The contract every storage backend fulfils.

Backends receive keys already validated by :mod:`storage_service.keys` and content already checked by
the service layer; they translate storage failures into :mod:`mesh.errors` types (NotFoundError for a
missing key) and never block the event loop.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from datetime import datetime

from mesh.errors import NotFoundError
from storage_service.objects import ObjectInfo, ObjectSummary

log = logging.getLogger(__name__)

# Size of the chunks objects are read back in: small enough for gRPC messages, large enough to be cheap.
READ_CHUNK_BYTES = 256 * 1024
# The bucket backends (GCS, S3) store the SHA-256 computed while an object was written among its metadata.
SHA256_METADATA_KEY = "sha256"
# Deletions in flight at once when a backend deletes a batch key by key: a cloud backend's calls overlap.
_DELETE_CONCURRENCY = 16


class StorageBackend(abc.ABC):
    """Objects by key. A put becomes visible only once complete; a failed or cancelled put leaves nothing."""

    name: str

    @abc.abstractmethod
    async def put(
        self,
        key: str,
        *,
        content_type: str,
        metadata: dict[str, str],
        chunks: AsyncIterator[bytes],
    ) -> ObjectInfo:
        """Stores the bytes of ``chunks`` under ``key``, replacing any object there."""

    @abc.abstractmethod
    async def stat(self, key: str) -> ObjectInfo: ...

    @abc.abstractmethod
    def read(self, key: str) -> AsyncGenerator[ObjectInfo | bytes, None]:
        """Yields the object's info, then its content in chunks, all from one consistent version."""

    @abc.abstractmethod
    async def delete(self, key: str) -> None: ...

    async def delete_many(self, keys: list[str]) -> list[str]:
        """Deletes ``keys`` (a missing object counts as deleted); returns the keys whose deletion failed.

        This one deletes key by key, a few at a time; a backend that can do better in one call overrides it.
        """
        gate = asyncio.Semaphore(_DELETE_CONCURRENCY)

        async def delete(key: str) -> bool:
            async with gate:
                try:
                    await self.delete(key)
                except NotFoundError:
                    return True
                except Exception:
                    log.exception("deleting an object failed", extra={"key": key})
                    return False
            return True

        outcomes = await asyncio.gather(*(delete(key) for key in keys))
        return [key for key, deleted in zip(keys, outcomes, strict=True) if not deleted]

    @abc.abstractmethod
    def list_objects(self, prefix: str) -> AsyncIterator[ObjectSummary]:
        """Every object whose key starts with ``prefix``, in key order."""

    @abc.abstractmethod
    async def signed_url(self, key: str, expires_in_seconds: int) -> str:
        """A URL that serves the object for ``expires_in_seconds`` from now."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Releases connections; the backend is unusable afterwards."""


def bucket_object_info(
    key: str,
    *,
    content_type: str | None,
    size_bytes: int,
    created_at: datetime,
    metadata: Mapping[str, str] | None,
) -> ObjectInfo:
    """An object as a bucket describes it, its SHA-256 taken out of the metadata it was stored with."""
    caller_metadata = dict(metadata or {})
    sha256 = caller_metadata.pop(SHA256_METADATA_KEY, "")
    return ObjectInfo(
        key=key,
        content_type=content_type or "application/octet-stream",
        size_bytes=size_bytes,
        sha256=sha256,
        created_at=created_at,
        metadata=caller_metadata,
    )
