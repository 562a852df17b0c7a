"""Objects in a Google Cloud Storage bucket, served by V4 signed URLs.

The google-cloud-storage client is synchronous: every call runs in a worker thread. With an endpoint
configured (an emulator), API calls are anonymous and only URL signing uses the service account key.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from datetime import timedelta
from typing import Any

import google.auth
import google.auth.transport.requests
from google.api_core import exceptions as google_exceptions
from google.auth.credentials import AnonymousCredentials, Credentials
from google.cloud import storage
from google.oauth2 import service_account

from mesh.errors import FailedPreconditionError, NotFoundError, UnavailableError
from storage_service.backends._spool import spool
from storage_service.backends._threads import run_blocking
from storage_service.backends.base import (
    READ_CHUNK_BYTES,
    SHA256_METADATA_KEY,
    StorageBackend,
    bucket_object_info,
)
from storage_service.objects import ObjectInfo, ObjectSummary

# Ranged reads of this size keep round trips few while GetObject streams smaller messages.
_DOWNLOAD_CHUNK_BYTES = 4 * 1024 * 1024
_TRANSIENT_ERRORS = (
    google_exceptions.ServiceUnavailable,
    google_exceptions.InternalServerError,
    google_exceptions.TooManyRequests,
    google_exceptions.GatewayTimeout,
)


class GcsBackend(StorageBackend):
    name = "gcs"

    def __init__(
        self,
        bucket: str,
        *,
        project: str | None = None,
        endpoint: str | None = None,
        credentials_file: str | None = None,
        cache_control: str | None = None,
    ) -> None:
        signing_credentials: Credentials
        if credentials_file:
            signing_credentials = service_account.Credentials.from_service_account_file(
                credentials_file, scopes=["https://www.googleapis.com/auth/devstorage.read_write"]
            )
        else:
            signing_credentials, default_project = google.auth.default()
            project = project or default_project
        api_credentials = AnonymousCredentials() if endpoint else signing_credentials
        client_options = {"api_endpoint": endpoint} if endpoint else None
        self._client = storage.Client(
            project=project or "local", credentials=api_credentials, client_options=client_options
        )
        self._bucket = self._client.bucket(bucket)
        self._endpoint = endpoint
        self._signing_credentials = signing_credentials
        self._cache_control = cache_control

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
            blob = self._bucket.blob(key)
            blob.metadata = {**metadata, SHA256_METADATA_KEY: upload.sha256}
            blob.cache_control = self._cache_control
            await _call(
                blob.upload_from_file,
                upload.file,
                size=upload.size_bytes,
                content_type=content_type,
                checksum="crc32c",
            )
        finally:
            upload.close()
        return _object_info(blob)

    async def stat(self, key: str) -> ObjectInfo:
        return _object_info(await self._existing_blob(key))

    async def _existing_blob(self, key: str) -> storage.Blob:
        blob = await _call(self._bucket.get_blob, key)
        if blob is None:
            raise NotFoundError(f"no object {key!r}", reason="OBJECT_NOT_FOUND")
        return blob

    async def read(self, key: str) -> AsyncGenerator[ObjectInfo | bytes, None]:
        blob = await self._existing_blob(key)
        yield _object_info(blob)
        # Pinning the generation makes a concurrent replacement fail the read instead of mixing versions.
        reader = blob.open("rb", chunk_size=_DOWNLOAD_CHUNK_BYTES, if_generation_match=blob.generation)
        try:
            while chunk := await _call(reader.read, READ_CHUNK_BYTES):
                yield chunk
        finally:
            reader.close()

    async def delete(self, key: str) -> None:
        try:
            await _call(self._bucket.delete_blob, key)
        except google_exceptions.NotFound:
            raise NotFoundError(f"no object {key!r}", reason="OBJECT_NOT_FOUND") from None

    async def list_objects(self, prefix: str) -> AsyncIterator[ObjectSummary]:
        pages = self._client.list_blobs(self._bucket, prefix=prefix or None, page_size=1000).pages
        while (page := await _call(next, pages, None)) is not None:
            for blob in page:
                yield ObjectSummary(key=blob.name, size_bytes=blob.size or 0, created_at=blob.time_created)

    async def signed_url(self, key: str, expires_in_seconds: int) -> str:
        signing: dict[str, Any] = {}
        if not isinstance(self._signing_credentials, service_account.Credentials):
            # Workload identity and other keyless credentials sign through the IAM signBlob API.
            await run_blocking(self._signing_credentials.refresh, google.auth.transport.requests.Request())
            # Keyless credentials that can sign (compute engine, impersonated) name their account.
            email = getattr(self._signing_credentials, "service_account_email", None)
            if not email:
                raise FailedPreconditionError(
                    "the default Google credentials name no service account to sign URLs with",
                    reason="NO_SIGNING_ACCOUNT",
                )
            signing = {"service_account_email": email, "access_token": self._signing_credentials.token}
        return await run_blocking(
            self._bucket.blob(key).generate_signed_url,
            version="v4",
            method="GET",
            expiration=timedelta(seconds=expires_in_seconds),
            credentials=self._signing_credentials,
            api_access_endpoint=self._endpoint or "https://storage.googleapis.com",
            **signing,
        )

    async def close(self) -> None:
        await run_blocking(self._client.close)


async def _call(func: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return await run_blocking(func, *args, **kwargs)
    except _TRANSIENT_ERRORS as exc:
        raise UnavailableError(f"Google Cloud Storage is unavailable: {exc}", retry_after_seconds=1) from exc


def _object_info(blob: storage.Blob) -> ObjectInfo:
    return bucket_object_info(
        blob.name,
        content_type=blob.content_type,
        size_bytes=blob.size or 0,
        created_at=blob.time_created,
        metadata=blob.metadata,
    )
