"""What the bucket backends (GCS, S3) make of an object's description: its SHA-256 is stored metadata."""

from __future__ import annotations

from datetime import UTC, datetime

from storage_service.backends.base import SHA256_METADATA_KEY, bucket_object_info
from storage_service.objects import ObjectInfo

CREATED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_the_sha256_is_taken_out_of_the_caller_metadata() -> None:
    info = bucket_object_info(
        "u/1.png",
        content_type="image/png",
        size_bytes=3,
        created_at=CREATED,
        metadata={SHA256_METADATA_KEY: "ab" * 32, "signal_id": "s1"},
    )

    assert info == ObjectInfo(
        key="u/1.png",
        content_type="image/png",
        size_bytes=3,
        sha256="ab" * 32,
        created_at=CREATED,
        metadata={"signal_id": "s1"},
    )


def test_an_object_stored_without_metadata_or_type_reads_as_untyped_bytes_without_a_hash() -> None:
    info = bucket_object_info("k", content_type=None, size_bytes=0, created_at=CREATED, metadata=None)

    assert (info.content_type, info.sha256, info.metadata) == ("application/octet-stream", "", {})
