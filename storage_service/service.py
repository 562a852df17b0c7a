"""Storage domain logic: validation, URL policy and limits, over whichever backend is configured."""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

from prometheus_client import Counter

from mesh.errors import InvalidArgumentError
from mesh.signing import media_signing_secret
from storage_service.backends.base import StorageBackend
from storage_service.keys import validate_key, validate_prefix
from storage_service.objects import ObjectInfo, ObjectSummary
from storage_service.settings import StorageSettings

log = logging.getLogger(__name__)

BYTES_WRITTEN = Counter("alerts_storage_bytes_written_total", "Bytes of objects stored")

MAX_CHUNK_BYTES = 1024 * 1024
DEFAULT_URL_LIFETIME_SECONDS = 3600
MAX_URL_LIFETIME_SECONDS = 7 * 24 * 3600
MAX_KEYS_PER_BATCH = 1000
DEFAULT_CONTENT_TYPE = "application/octet-stream"
# Every backend stores the SHA-256 under this metadata name.
RESERVED_METADATA_KEYS = frozenset({"sha256"})
# S3 caps user metadata at 2 KiB; the same limit everywhere keeps backends interchangeable.
MAX_METADATA_BYTES = 2048

_MIME_NAME = r"[A-Za-z0-9!#$&^_.+-]+"
_CONTENT_TYPE = re.compile(
    rf'{_MIME_NAME}/{_MIME_NAME}(?:\s*;\s*{_MIME_NAME}=(?:{_MIME_NAME}|"[ !#-\[\]-~]*"))*'
)
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_METADATA_KEY = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_METADATA_VALUE = re.compile(r"[ -~]*")


@dataclass(frozen=True, slots=True)
class ObjectUrl:
    url: str
    # None for public (CDN) URLs, which do not expire.
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class StorageUsage:
    objects: int
    bytes: int


class StorageService:
    def __init__(self, backend: StorageBackend, *, max_object_bytes: int, public_base_url: str = "") -> None:
        self._backend = backend
        self._max_object_bytes = max_object_bytes
        self._public_base_url = public_base_url.rstrip("/")

    @property
    def backend(self) -> StorageBackend:
        return self._backend

    async def put_object(
        self,
        key: str,
        *,
        content_type: str,
        metadata: dict[str, str],
        chunks: AsyncIterator[bytes],
        expected_sha256: str | None = None,
    ) -> ObjectInfo:
        """Stores the stream under ``key``; a stream that breaks a limit midway stores nothing.

        With ``expected_sha256`` (hex), the object is stored only if the content received hashes to it,
        which also proves the stream was not cut short.
        """
        validate_key(key)
        _validate_metadata(metadata)
        if expected_sha256 is not None and not _SHA256_HEX.fullmatch(expected_sha256):
            raise InvalidArgumentError("sha256 must be 64 lowercase hex digits", reason="INVALID_CHECKSUM")
        info = await self._backend.put(
            key,
            content_type=_normalized_content_type(content_type),
            metadata=metadata,
            chunks=self._checked(chunks, expected_sha256),
        )
        BYTES_WRITTEN.inc(info.size_bytes)
        log.info("object stored", extra={"key": info.key, "bytes": info.size_bytes})
        return info

    async def _checked(
        self, chunks: AsyncIterator[bytes], expected_sha256: str | None
    ) -> AsyncIterator[bytes]:
        """The chunks, refused midway when one breaks a limit, and at the end when the hash disagrees.

        Backends commit only after the last chunk, so raising here stores nothing.
        """
        hasher = hashlib.sha256() if expected_sha256 is not None else None
        total = 0
        async for chunk in chunks:
            if len(chunk) > MAX_CHUNK_BYTES:
                raise InvalidArgumentError(
                    f"chunks are limited to {MAX_CHUNK_BYTES} bytes", reason="CHUNK_TOO_LARGE"
                )
            total += len(chunk)
            if total > self._max_object_bytes:
                raise InvalidArgumentError(
                    f"objects are limited to {self._max_object_bytes} bytes", reason="OBJECT_TOO_LARGE"
                )
            if hasher is not None:
                hasher.update(chunk)
            if chunk:
                yield chunk
        if hasher is not None and hasher.hexdigest() != expected_sha256:
            raise InvalidArgumentError(
                "the content received does not match the declared sha256", reason="CHECKSUM_MISMATCH"
            )

    async def get_object_url(self, key: str, expires_in_seconds: int = 0) -> ObjectUrl:
        """A URL for ``key``, public when a base URL is configured, otherwise signed and expiring.

        Existence is not checked: signing needs no round trip, so a page of signals costs no storage
        calls, and a URL for a missing object simply answers 404.
        """
        return await self._object_url(validate_key(key), expires_in_seconds)

    async def _object_url(self, key: str, expires_in_seconds: int) -> ObjectUrl:
        """get_object_url for a key already validated."""
        if expires_in_seconds < 0 or expires_in_seconds > MAX_URL_LIFETIME_SECONDS:
            raise InvalidArgumentError(
                f"expires_in_seconds must be between 0 and {MAX_URL_LIFETIME_SECONDS}",
                reason="INVALID_URL_LIFETIME",
            )
        if self._public_base_url:
            return ObjectUrl(url=f"{self._public_base_url}/{quote(key, safe='/')}", expires_at=None)
        lifetime = expires_in_seconds or DEFAULT_URL_LIFETIME_SECONDS
        # Taken before signing, so the URL never expires before the time reported.
        expires_at = datetime.fromtimestamp(int(time.time()) + lifetime, UTC)
        return ObjectUrl(url=await self._backend.signed_url(key, lifetime), expires_at=expires_at)

    async def get_object_urls(self, keys: list[str], expires_in_seconds: int = 0) -> list[ObjectUrl]:
        """URLs for ``keys``, in their order; every key is validated before any URL is made."""
        if len(keys) > MAX_KEYS_PER_BATCH:
            raise InvalidArgumentError(f"at most {MAX_KEYS_PER_BATCH} keys per call", reason="TOO_MANY_KEYS")
        for key in keys:
            validate_key(key)
        return [await self._object_url(key, expires_in_seconds) for key in keys]

    async def stat_object(self, key: str) -> ObjectInfo:
        return await self._backend.stat(validate_key(key))

    def read_object(self, key: str) -> AsyncGenerator[ObjectInfo | bytes, None]:
        """The object's info, then its content in chunks; NotFoundError surfaces on the first item."""
        return self._backend.read(validate_key(key))

    async def delete_object(self, key: str) -> None:
        await self._backend.delete(validate_key(key))

    async def delete_objects(self, keys: list[str]) -> list[str]:
        """Deletes ``keys`` (a missing object counts as deleted); returns the keys whose deletion failed."""
        if len(keys) > MAX_KEYS_PER_BATCH:
            raise InvalidArgumentError(f"at most {MAX_KEYS_PER_BATCH} keys per call", reason="TOO_MANY_KEYS")
        for key in keys:
            validate_key(key)
        return await self._backend.delete_many(keys)

    def list_objects(self, prefix: str = "") -> AsyncIterator[ObjectSummary]:
        """Objects whose key starts with ``prefix``, in key order (for retention and usage jobs)."""
        return self._backend.list_objects(validate_prefix(prefix))

    async def usage(self, prefix: str) -> StorageUsage:
        objects = size = 0
        async for summary in self.list_objects(prefix):
            objects += 1
            size += summary.size_bytes
        return StorageUsage(objects=objects, bytes=size)

    async def close(self) -> None:
        await self._backend.close()


def _normalized_content_type(content_type: str) -> str:
    content_type = content_type.strip()
    if not content_type:
        return DEFAULT_CONTENT_TYPE
    if len(content_type) > 255 or not _CONTENT_TYPE.fullmatch(content_type):
        raise InvalidArgumentError(f"invalid content type {content_type!r}", reason="INVALID_CONTENT_TYPE")
    return content_type


def _validate_metadata(metadata: dict[str, str]) -> None:
    size = 0
    for name, value in metadata.items():
        if not _METADATA_KEY.fullmatch(name) or name in RESERVED_METADATA_KEYS:
            raise InvalidArgumentError(
                f"invalid metadata name {name!r}: lowercase letters, digits and '-', not 'sha256'",
                reason="INVALID_METADATA",
            )
        if not _METADATA_VALUE.fullmatch(value):
            raise InvalidArgumentError(
                f"metadata value of {name!r} must be printable ASCII", reason="INVALID_METADATA"
            )
        size += len(name) + len(value)
    if size > MAX_METADATA_BYTES:
        raise InvalidArgumentError(
            f"metadata is limited to {MAX_METADATA_BYTES} bytes", reason="INVALID_METADATA"
        )


def build_backend(settings: StorageSettings) -> StorageBackend:
    """The backend the settings choose; imports only that backend's client library."""
    if settings.storage_backend == "gcs":
        from storage_service.backends.gcs import GcsBackend

        return GcsBackend(
            settings.storage_gcs_bucket,
            project=settings.storage_gcs_project or None,
            endpoint=settings.storage_gcs_endpoint or None,
            credentials_file=settings.storage_gcs_credentials_file or None,
            cache_control=settings.object_cache_control,
        )
    if settings.storage_backend == "s3":
        from storage_service.backends.s3 import S3Backend

        secret = settings.storage_s3_secret_access_key
        return S3Backend(
            settings.storage_s3_bucket,
            endpoint_url=settings.storage_s3_endpoint_url or None,
            region=settings.storage_s3_region or None,
            access_key_id=settings.storage_s3_access_key_id or None,
            secret_access_key=secret.get_secret_value() if secret else None,
            addressing_style=settings.storage_s3_addressing_style,
            cache_control=settings.object_cache_control,
        )
    from storage_service.backends.local import LocalBackend

    return LocalBackend(
        settings.local_objects_dir,
        public_url=settings.external_url,
        signing_secret=media_signing_secret(settings),
    )


def build_service(settings: StorageSettings) -> StorageService:
    return StorageService(
        build_backend(settings),
        max_object_bytes=settings.storage_max_object_bytes,
        public_base_url=settings.storage_public_base_url,
    )
