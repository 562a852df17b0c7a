"""Objects in an S3-compatible bucket (AWS S3, Cloudflare R2, MinIO), served by presigned GET URLs.

boto3 is synchronous: every call runs in a worker thread. Objects over 8 MiB go up as multipart uploads
whose parts are sent as they are read; an upload that fails or is cancelled is aborted so that no parts
are left behind (and billed).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import UTC, datetime
from typing import Any, Literal

import boto3
import botocore.config
import botocore.exceptions

from mesh.errors import NotFoundError, UnavailableError
from storage_service.backends._spool import SPOOL_MEMORY_BYTES, SpooledUpload, spool
from storage_service.backends._threads import run_blocking
from storage_service.backends.base import (
    READ_CHUNK_BYTES,
    SHA256_METADATA_KEY,
    StorageBackend,
    bucket_object_info,
)
from storage_service.objects import ObjectInfo, ObjectSummary

MULTIPART_THRESHOLD_BYTES = SPOOL_MEMORY_BYTES
# S3 requires at least 5 MiB for every part but the last.
MULTIPART_PART_BYTES = 8 * 1024 * 1024
_NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound"}


class S3Backend(StorageBackend):
    name = "s3"

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        addressing_style: Literal["auto", "path", "virtual"] = "auto",
        cache_control: str | None = None,
    ) -> None:
        self._bucket = bucket
        self._object_headers = {"CacheControl": cache_control} if cache_control else {}
        # Without explicit keys boto3 finds them itself (environment, instance role, web identity).
        self._client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=botocore.config.Config(
                signature_version="s3v4",
                s3={"addressing_style": addressing_style},
                retries={"mode": "standard", "max_attempts": 3},
                max_pool_connections=32,
            ),
        )

    @property
    def client(self) -> Any:
        return self._client

    async def put(
        self,
        key: str,
        *,
        content_type: str,
        metadata: dict[str, str],
        chunks: AsyncIterator[bytes],
    ) -> ObjectInfo:
        upload = await spool(chunks)
        try:
            object_metadata = {**metadata, SHA256_METADATA_KEY: upload.sha256}
            if upload.size_bytes > MULTIPART_THRESHOLD_BYTES:
                await self._put_multipart(key, content_type, object_metadata, upload)
            else:
                body = await run_blocking(upload.file.read)
                await _call(
                    self._client.put_object,
                    Bucket=self._bucket,
                    Key=key,
                    Body=body,
                    ContentType=content_type,
                    Metadata=object_metadata,
                    **self._object_headers,
                )
        finally:
            upload.close()
        return ObjectInfo(
            key=key,
            content_type=content_type,
            size_bytes=upload.size_bytes,
            sha256=upload.sha256,
            created_at=datetime.now(UTC),
            metadata=dict(metadata),
        )

    async def _put_multipart(
        self, key: str, content_type: str, metadata: dict[str, str], upload: SpooledUpload
    ) -> None:
        created = await _call(
            self._client.create_multipart_upload,
            Bucket=self._bucket,
            Key=key,
            ContentType=content_type,
            Metadata=metadata,
            **self._object_headers,
        )
        upload_id = created["UploadId"]
        try:
            parts = []
            part_number = 1
            while part := await run_blocking(upload.file.read, MULTIPART_PART_BYTES):
                uploaded = await _call(
                    self._client.upload_part,
                    Bucket=self._bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=part_number,
                    Body=part,
                )
                parts.append({"PartNumber": part_number, "ETag": uploaded["ETag"]})
                part_number += 1
            await _call(
                self._client.complete_multipart_upload,
                Bucket=self._bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            # Shielded: a second cancellation must not skip the abort and leave billed parts behind.
            await asyncio.shield(
                run_blocking(
                    self._client.abort_multipart_upload, Bucket=self._bucket, Key=key, UploadId=upload_id
                )
            )
            raise

    async def stat(self, key: str) -> ObjectInfo:
        head = await _call(self._client.head_object, Bucket=self._bucket, Key=key)
        return _object_info(key, head)

    async def read(self, key: str) -> AsyncGenerator[ObjectInfo | bytes, None]:
        # One GET: the body is the version whose headers describe it, whatever happens to the key meanwhile.
        response = await _call(self._client.get_object, Bucket=self._bucket, Key=key)
        body = response["Body"]
        try:
            yield _object_info(key, response)
            while chunk := await _call(body.read, READ_CHUNK_BYTES):
                yield chunk
        finally:
            body.close()

    async def delete(self, key: str) -> None:
        # S3 deletes are idempotent and report nothing about absent keys, so existence is checked first.
        await self.stat(key)
        await _call(self._client.delete_object, Bucket=self._bucket, Key=key)

    async def list_objects(self, prefix: str) -> AsyncIterator[ObjectSummary]:
        paginator = self._client.get_paginator("list_objects_v2")
        pages = iter(paginator.paginate(Bucket=self._bucket, Prefix=prefix))
        while (page := await _call(next, pages, None)) is not None:
            for entry in page.get("Contents", ()):
                yield ObjectSummary(
                    key=entry["Key"], size_bytes=int(entry["Size"]), created_at=entry["LastModified"]
                )

    async def signed_url(self, key: str, expires_in_seconds: int) -> str:
        return await run_blocking(
            self._client.generate_presigned_url,
            "get_object",
            Params={"Bucket": self._bucket, "Key": key},
            ExpiresIn=expires_in_seconds,
        )

    async def close(self) -> None:
        await run_blocking(self._client.close)


async def _call(func: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return await run_blocking(func, *args, **kwargs)
    except botocore.exceptions.ClientError as exc:
        error = exc.response.get("Error", {})
        if str(error.get("Code")) in _NOT_FOUND_CODES:
            raise NotFoundError(f"no object {kwargs.get('Key')!r}", reason="OBJECT_NOT_FOUND") from None
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if status in (429, 500, 502, 503, 504):
            raise UnavailableError(f"S3 is unavailable: {error.get('Code')}", retry_after_seconds=1) from exc
        raise
    except (botocore.exceptions.ConnectionError, botocore.exceptions.ReadTimeoutError) as exc:
        raise UnavailableError(f"S3 is unreachable: {exc}", retry_after_seconds=1) from exc


def _object_info(key: str, head: dict[str, Any]) -> ObjectInfo:
    return bucket_object_info(
        key,
        content_type=head.get("ContentType"),
        size_bytes=int(head["ContentLength"]),
        created_at=head["LastModified"],
        metadata=head.get("Metadata"),
    )
