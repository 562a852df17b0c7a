"""The contract every storage backend fulfils.

Backends receive keys already validated by :mod:`storage_service.keys` and content already checked by
the service layer; they translate storage failures into :mod:`mesh.errors` types (NotFoundError for a
missing key) and never block the event loop.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from datetime import datetime

from storage_service.objects import ObjectInfo, ObjectSummary

# Size of the chunks objects are read back in: small enough for gRPC messages, large enough to be cheap.
READ_CHUNK_BYTES = 256 * 1024
# The bucket backends (GCS, S3) store the SHA-256 computed while an object was written among its metadata.
SHA256_METADATA_KEY = "sha256"


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
