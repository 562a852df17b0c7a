"""Objects on the local filesystem, served through the edge with HMAC-signed URLs.

Layout under the root directory (``{data_dir}/objects`` by default)::

    tmp/<random>.part                  objects being written
    <aa>/<sha256 of key>.obj           complete objects

A file is the object's content followed by a JSON trailer (key, content type, size, SHA-256, creation
time, metadata), the trailer's length (4 bytes, big-endian) and a magic tag. Content and metadata are
therefore one file, made visible by a single rename after fsync: readers see the old object or the new
one, never half of either. File names are hashes of keys so that any two valid keys can coexist (keys
"a" and "a/b" would clash as a file and a directory).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import secrets
import struct
import time
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from mesh.errors import InternalError, NotFoundError
from mesh.signing import signed_media_url
from storage_service.backends._threads import run_blocking
from storage_service.backends.base import READ_CHUNK_BYTES, StorageBackend
from storage_service.objects import ObjectInfo, ObjectSummary

log = logging.getLogger(__name__)

_MAGIC = b"ALOBJv1\n"
_TRAILER_TAIL = struct.Struct(">I8s")
_OBJECT_SUFFIX = ".obj"
_PART_SUFFIX = ".part"
# Parts older than this are leftovers of a crashed process, not writes in progress.
_STALE_PART_SECONDS = 3600


class LocalBackend(StorageBackend):
    name = "local"

    def __init__(self, root: Path, *, public_url: str, signing_secret: bytes) -> None:
        self._root = root
        self._tmp = root / "tmp"
        self._public_url = public_url
        self._signing_secret = signing_secret
        self._tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._remove_stale_parts()

    @property
    def root(self) -> Path:
        return self._root

    def object_path(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return self._root / digest[:2] / f"{digest}{_OBJECT_SUFFIX}"

    async def put(
        self,
        key: str,
        *,
        content_type: str,
        metadata: dict[str, str],
        chunks: AsyncIterator[bytes],
    ) -> ObjectInfo:
        part_path = self._tmp / f"{secrets.token_hex(16)}{_PART_SUFFIX}"
        part: BinaryIO | None = None
        try:
            part = await run_blocking(_open_exclusive, part_path)
            hasher = hashlib.sha256()
            size = 0
            async for chunk in chunks:
                await run_blocking(_write_and_hash, part, chunk, hasher)
                size += len(chunk)
            info = ObjectInfo(
                key=key,
                content_type=content_type,
                size_bytes=size,
                sha256=hasher.hexdigest(),
                created_at=datetime.now(UTC),
                metadata=dict(metadata),
            )
            await run_blocking(self._publish, part, part_path, info)
        except BaseException:
            # Also on cancellation (the client went away): nothing of this write may remain.
            if part is not None:
                part.close()
            part_path.unlink(missing_ok=True)
            raise
        return info

    def _publish(self, part: BinaryIO, part_path: Path, info: ObjectInfo) -> None:
        trailer = json.dumps(_trailer_fields(info), separators=(",", ":")).encode()
        part.write(trailer)
        part.write(_TRAILER_TAIL.pack(len(trailer), _MAGIC))
        part.flush()
        os.fsync(part.fileno())
        part.close()
        final_path = self.object_path(info.key)
        final_path.parent.mkdir(exist_ok=True, mode=0o700)
        os.replace(part_path, final_path)
        _fsync_directory(final_path.parent)

    async def stat(self, key: str) -> ObjectInfo:
        return await run_blocking(self._stat, key)

    def _stat(self, key: str) -> ObjectInfo:
        info, file = self._open_object(key)
        file.close()
        return info

    async def read(self, key: str) -> AsyncGenerator[ObjectInfo | bytes, None]:
        # The open file pins this version even if the key is replaced or deleted while it streams.
        info, file = await run_blocking(self._open_object, key)
        try:
            yield info
            remaining = info.size_bytes
            while remaining > 0:
                chunk = await run_blocking(file.read, min(READ_CHUNK_BYTES, remaining))
                if not chunk:
                    raise InternalError(f"object {key!r} is shorter than its recorded size")
                remaining -= len(chunk)
                yield chunk
        finally:
            file.close()

    def _open_object(self, key: str) -> tuple[ObjectInfo, BinaryIO]:
        try:
            file = self.object_path(key).open("rb")
        except FileNotFoundError:
            raise NotFoundError(f"no object {key!r}", reason="OBJECT_NOT_FOUND") from None
        try:
            info = _read_trailer(file)
            if info.key != key:
                raise InternalError(f"object file for {key!r} holds {info.key!r}")
            file.seek(0)
        except BaseException:
            file.close()
            raise
        return info, file

    async def delete(self, key: str) -> None:
        await run_blocking(self._delete, key)

    def _delete(self, key: str) -> None:
        path = self.object_path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            raise NotFoundError(f"no object {key!r}", reason="OBJECT_NOT_FOUND") from None
        _fsync_directory(path.parent)

    async def delete_many(self, keys: list[str]) -> list[str]:
        # The unlinks take one thread hop, and each directory is made durable once, not once per key; the
        # directories' fsyncs overlap (as many as the default executor's threads), as they wait on the disk.
        failed, unlinked = await run_blocking(self._unlink_many, keys)

        async def make_durable(directory: Path, directory_keys: list[str]) -> None:
            try:
                await run_blocking(_fsync_directory, directory)
            except OSError:
                log.exception("making deletions durable failed", extra={"directory": str(directory)})
                failed.update(directory_keys)

        await asyncio.gather(*(make_durable(directory, in_it) for directory, in_it in unlinked.items()))
        return [key for key in keys if key in failed]

    def _unlink_many(self, keys: list[str]) -> tuple[set[str], dict[Path, list[str]]]:
        """Unlinks each key's file: the keys that failed, and the unlinked keys by directory."""
        failed: set[str] = set()
        unlinked: dict[Path, list[str]] = {}
        for key in keys:
            path = self.object_path(key)
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError:
                log.exception("deleting an object failed", extra={"key": key})
                failed.add(key)
                continue
            unlinked.setdefault(path.parent, []).append(key)
        return failed, unlinked

    async def list_objects(self, prefix: str) -> AsyncIterator[ObjectSummary]:
        for info in await run_blocking(self._list_objects, prefix):
            yield info

    def _list_objects(self, prefix: str) -> list[ObjectSummary]:
        found = []
        for path in self._root.glob(f"??/*{_OBJECT_SUFFIX}"):
            try:
                with path.open("rb") as file:
                    info = _read_trailer(file)
            except FileNotFoundError:
                continue
            if info.key.startswith(prefix):
                found.append(
                    ObjectSummary(key=info.key, size_bytes=info.size_bytes, created_at=info.created_at)
                )
        return sorted(found, key=lambda summary: summary.key)

    async def signed_url(self, key: str, expires_in_seconds: int) -> str:
        expires = int(time.time()) + expires_in_seconds
        return signed_media_url(self._public_url, key, expires, self._signing_secret)

    async def close(self) -> None:
        """Nothing to release: every file is closed when its call ends."""

    def _remove_stale_parts(self) -> None:
        cutoff = time.time() - _STALE_PART_SECONDS
        for part_path in self._tmp.glob(f"*{_PART_SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):
                if part_path.stat().st_mtime < cutoff:
                    part_path.unlink()


def _open_exclusive(path: Path) -> BinaryIO:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    return os.fdopen(descriptor, "wb")


def _write_and_hash(file: BinaryIO, chunk: bytes, hasher: hashlib._Hash) -> None:
    file.write(chunk)
    hasher.update(chunk)


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _trailer_fields(info: ObjectInfo) -> dict[str, object]:
    return {
        "key": info.key,
        "content_type": info.content_type,
        "size_bytes": info.size_bytes,
        "sha256": info.sha256,
        "created_at": info.created_at.isoformat(),
        "metadata": info.metadata,
    }


def _read_trailer(file: BinaryIO) -> ObjectInfo:
    file_size = os.fstat(file.fileno()).st_size
    if file_size < _TRAILER_TAIL.size:
        raise InternalError("object file is truncated")
    file.seek(file_size - _TRAILER_TAIL.size)
    trailer_size, magic = _TRAILER_TAIL.unpack(file.read(_TRAILER_TAIL.size))
    content_size = file_size - _TRAILER_TAIL.size - trailer_size
    if magic != _MAGIC or content_size < 0:
        raise InternalError("object file has no valid trailer")
    file.seek(content_size)
    fields = json.loads(file.read(trailer_size))
    if fields["size_bytes"] != content_size:
        raise InternalError("object file size disagrees with its trailer")
    return ObjectInfo(
        key=fields["key"],
        content_type=fields["content_type"],
        size_bytes=content_size,
        sha256=fields["sha256"],
        created_at=datetime.fromisoformat(fields["created_at"]),
        metadata=dict(fields["metadata"]),
    )
