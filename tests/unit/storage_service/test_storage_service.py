import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mesh.errors import InvalidArgumentError, NotFoundError
from storage_service.backends.local import LocalBackend
from storage_service.service import (
    MAX_CHUNK_BYTES,
    MAX_URL_LIFETIME_SECONDS,
    StorageService,
)

SECRET = b"k" * 32


def _service(
    tmp_path: Path, *, public_base_url: str = "", max_object_bytes: int = 10_000_000
) -> StorageService:
    backend = LocalBackend(tmp_path / "objects", public_url="http://edge.test", signing_secret=SECRET)
    return StorageService(backend, max_object_bytes=max_object_bytes, public_base_url=public_base_url)


async def _stream(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def test_missing_content_type_defaults_to_octet_stream(tmp_path: Path) -> None:
    info = await _service(tmp_path).put_object("a", content_type="", metadata={}, chunks=_stream(b"x"))
    assert info.content_type == "application/octet-stream"


@pytest.mark.parametrize("content_type", ["image/png", "text/plain; charset=utf-8", 'text/x; a="b c"'])
async def test_accepts_media_types(tmp_path: Path, content_type: str) -> None:
    info = await _service(tmp_path).put_object(
        "a", content_type=content_type, metadata={}, chunks=_stream(b"x")
    )
    assert info.content_type == content_type


@pytest.mark.parametrize("content_type", ["png", "image/png\r\nX-Injected: 1", "image/", "a/b; c"])
async def test_refuses_malformed_content_types(tmp_path: Path, content_type: str) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        await _service(tmp_path).put_object("a", content_type=content_type, metadata={}, chunks=_stream(b"x"))
    assert raised.value.reason == "INVALID_CONTENT_TYPE"


@pytest.mark.parametrize(
    "metadata",
    [{"sha256": "x"}, {"Upper": "x"}, {"under_score": "x"}, {"k": "é"}, {"k": "a\nb"}, {"k": "x" * 3000}],
)
async def test_refuses_metadata_that_not_every_backend_can_hold(
    tmp_path: Path, metadata: dict[str, str]
) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        await _service(tmp_path).put_object("a", content_type="", metadata=metadata, chunks=_stream(b"x"))
    assert raised.value.reason == "INVALID_METADATA"


async def test_oversized_chunk_stores_nothing(tmp_path: Path) -> None:
    service = _service(tmp_path)
    with pytest.raises(InvalidArgumentError) as raised:
        await service.put_object(
            "a", content_type="", metadata={}, chunks=_stream(b"x" * (MAX_CHUNK_BYTES + 1))
        )
    assert raised.value.reason == "CHUNK_TOO_LARGE"
    with pytest.raises(NotFoundError):
        await service.stat_object("a")


async def test_oversized_object_stores_nothing(tmp_path: Path) -> None:
    service = _service(tmp_path, max_object_bytes=1500)
    with pytest.raises(InvalidArgumentError) as raised:
        await service.put_object("a", content_type="", metadata={}, chunks=_stream(b"x" * 1000, b"x" * 1000))
    assert raised.value.reason == "OBJECT_TOO_LARGE"
    with pytest.raises(NotFoundError):
        await service.stat_object("a")
    assert list((tmp_path / "objects" / "tmp").iterdir()) == []


async def test_bad_keys_are_refused_by_every_operation(tmp_path: Path) -> None:
    service = _service(tmp_path)
    with pytest.raises(InvalidArgumentError):
        await service.put_object("../x", content_type="", metadata={}, chunks=_stream(b"x"))
    with pytest.raises(InvalidArgumentError):
        await service.get_object_url("/abs")
    with pytest.raises(InvalidArgumentError):
        await service.delete_object("a//b")
    with pytest.raises(InvalidArgumentError):
        service.read_object("a\x00")


async def test_url_lifetime_defaults_to_an_hour_and_is_capped_at_seven_days(tmp_path: Path) -> None:
    service = _service(tmp_path)
    default = await service.get_object_url("a")
    longest = await service.get_object_url("a", MAX_URL_LIFETIME_SECONDS)
    assert default.expires_at is not None
    assert longest.expires_at is not None
    assert (longest.expires_at - default.expires_at).total_seconds() == pytest.approx(
        MAX_URL_LIFETIME_SECONDS - 3600, abs=2
    )
    for lifetime in (-1, MAX_URL_LIFETIME_SECONDS + 1):
        with pytest.raises(InvalidArgumentError):
            await service.get_object_url("a", lifetime)


async def test_public_base_url_gives_permanent_urls(tmp_path: Path) -> None:
    service = _service(tmp_path, public_base_url="https://cdn.example.com/shots/")
    url = await service.get_object_url("u/x y.png", 60)
    assert url.url == "https://cdn.example.com/shots/u/x%20y.png"
    assert url.expires_at is None


async def test_usage_counts_objects_and_bytes_under_a_prefix(tmp_path: Path) -> None:
    service = _service(tmp_path)
    await service.put_object("u/1/a", content_type="", metadata={}, chunks=_stream(b"x" * 10))
    await service.put_object("u/1/b", content_type="", metadata={}, chunks=_stream(b"x" * 5))
    await service.put_object("u/2/a", content_type="", metadata={}, chunks=_stream(b"x" * 7))
    usage = await service.usage("u/1/")
    assert (usage.objects, usage.bytes) == (2, 15)


async def test_declared_sha256_is_checked_before_anything_is_stored(tmp_path: Path) -> None:
    service = _service(tmp_path)
    digest = hashlib.sha256(b"abc").hexdigest()
    info = await service.put_object(
        "a", content_type="", metadata={}, chunks=_stream(b"a", b"bc"), expected_sha256=digest
    )
    assert info.sha256 == digest
    with pytest.raises(InvalidArgumentError) as raised:
        await service.put_object(
            "b", content_type="", metadata={}, chunks=_stream(b"ab"), expected_sha256=digest
        )
    assert raised.value.reason == "CHECKSUM_MISMATCH"
    with pytest.raises(NotFoundError):
        await service.stat_object("b")
    with pytest.raises(InvalidArgumentError) as raised:
        await service.put_object(
            "c", content_type="", metadata={}, chunks=_stream(b"x"), expected_sha256="ABC"
        )
    assert raised.value.reason == "INVALID_CHECKSUM"
