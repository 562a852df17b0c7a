import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mesh.errors import NotFoundError
from mesh.signing import verify_media_signature
from storage_service.backends.local import LocalBackend

SECRET = b"k" * 32


@pytest.fixture
def backend(tmp_path: Path) -> LocalBackend:
    return LocalBackend(tmp_path / "objects", public_url="http://edge.test", signing_secret=SECRET)


async def _stream(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def _read_all(backend: LocalBackend, key: str) -> tuple[object, bytes]:
    parts = [part async for part in backend.read(key)]
    return parts[0], b"".join(parts[1:])  # type: ignore[arg-type]


def _leftover_parts(backend: LocalBackend) -> list[Path]:
    return list((backend.root / "tmp").iterdir())


async def test_put_then_read_back_with_recorded_info(backend: LocalBackend) -> None:
    content = os.urandom(700_000)
    info = await backend.put(
        "shots/a.png",
        content_type="image/png",
        metadata={"signal-id": "42"},
        chunks=_stream(content[:300_000], content[300_000:]),
    )
    assert info.size_bytes == len(content)
    assert info.sha256 == hashlib.sha256(content).hexdigest()
    read_info, read_content = await _read_all(backend, "shots/a.png")
    assert read_info == info
    assert read_content == content
    assert await backend.stat("shots/a.png") == info
    assert _leftover_parts(backend) == []


async def test_keys_that_would_clash_as_file_and_directory_coexist(backend: LocalBackend) -> None:
    await backend.put("a", content_type="text/plain", metadata={}, chunks=_stream(b"file"))
    await backend.put("a/b", content_type="text/plain", metadata={}, chunks=_stream(b"child"))
    assert (await _read_all(backend, "a"))[1] == b"file"
    assert (await _read_all(backend, "a/b"))[1] == b"child"


async def test_empty_object(backend: LocalBackend) -> None:
    info = await backend.put("empty", content_type="text/plain", metadata={}, chunks=_stream())
    assert info.size_bytes == 0
    assert (await _read_all(backend, "empty"))[1] == b""


async def test_replacing_keeps_a_reader_on_the_version_it_opened(backend: LocalBackend) -> None:
    await backend.put("k", content_type="text/plain", metadata={}, chunks=_stream(b"old" * 100_000))
    reader = backend.read("k")
    first = await anext(reader)
    await backend.put("k", content_type="text/plain", metadata={}, chunks=_stream(b"new"))
    rest = b"".join([chunk async for chunk in reader])  # type: ignore[misc]
    assert first.size_bytes == 300_000  # type: ignore[union-attr]
    assert rest == b"old" * 100_000
    assert (await _read_all(backend, "k"))[1] == b"new"


async def test_failed_stream_leaves_neither_object_nor_part(backend: LocalBackend) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"x" * 1000
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await backend.put("broken", content_type="text/plain", metadata={}, chunks=broken())
    with pytest.raises(NotFoundError):
        await backend.stat("broken")
    assert _leftover_parts(backend) == []


async def test_cancelled_put_leaves_neither_object_nor_part(backend: LocalBackend) -> None:
    received = asyncio.Event()

    async def stalled() -> AsyncIterator[bytes]:
        yield b"x" * 1000
        received.set()
        await asyncio.Event().wait()
        yield b"never"

    task = asyncio.create_task(
        backend.put("stalled", content_type="text/plain", metadata={}, chunks=stalled())
    )
    await received.wait()
    assert len(_leftover_parts(backend)) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _leftover_parts(backend) == []
    with pytest.raises(NotFoundError):
        await backend.stat("stalled")


async def test_delete(backend: LocalBackend) -> None:
    await backend.put("gone", content_type="text/plain", metadata={}, chunks=_stream(b"x"))
    await backend.delete("gone")
    with pytest.raises(NotFoundError):
        await backend.stat("gone")
    with pytest.raises(NotFoundError):
        await backend.delete("gone")


async def test_list_objects_by_prefix_in_key_order(backend: LocalBackend) -> None:
    for key in ("u/2/b", "u/1/b", "u/1/a", "v/1/a"):
        await backend.put(key, content_type="text/plain", metadata={}, chunks=_stream(key.encode()))
    listed = [summary async for summary in backend.list_objects("u/1/")]
    assert [(summary.key, summary.size_bytes) for summary in listed] == [("u/1/a", 5), ("u/1/b", 5)]
    assert [summary.key async for summary in backend.list_objects("")] == ["u/1/a", "u/1/b", "u/2/b", "v/1/a"]


async def test_signed_url_verifies_with_the_shared_secret(backend: LocalBackend) -> None:
    earliest = int(time.time()) + 300
    url = await backend.signed_url("shots/a b.png", 300)
    path, _, query = url.partition("?")
    assert path == "http://edge.test/media/shots/a%20b.png"
    fields = dict(item.split("=") for item in query.split("&"))
    expires = verify_media_signature("shots/a b.png", fields["expires"], fields["sig"], SECRET)
    assert earliest <= expires <= int(time.time()) + 300


def test_start_up_removes_stale_parts_but_not_fresh_ones(tmp_path: Path) -> None:
    tmp = tmp_path / "objects" / "tmp"
    tmp.mkdir(parents=True)
    stale, fresh = tmp / "stale.part", tmp / "fresh.part"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    LocalBackend(tmp_path / "objects", public_url="http://edge.test", signing_secret=SECRET)
    assert sorted(path.name for path in tmp.iterdir()) == ["fresh.part"]


async def test_delete_many_removes_each_and_counts_a_missing_one_as_deleted(
    backend: LocalBackend,
) -> None:
    for key in ("a", "b", "kept"):
        await backend.put(key, content_type="text/plain", metadata={}, chunks=_stream(key.encode()))
    assert await backend.delete_many(["a", "never", "b"]) == []
    for key in ("a", "b"):
        with pytest.raises(NotFoundError):
            await backend.stat(key)
    assert (await _read_all(backend, "kept"))[1] == b"kept"


async def test_delete_many_reports_what_it_could_not_delete_and_deletes_the_rest(
    backend: LocalBackend,
) -> None:
    for key in ("a", "b"):
        await backend.put(key, content_type="text/plain", metadata={}, chunks=_stream(key.encode()))
    # A directory where an object's file would be cannot be unlinked as a file.
    backend.object_path("stuck").mkdir(parents=True)
    assert await backend.delete_many(["a", "stuck", "b"]) == ["stuck"]
    for key in ("a", "b"):
        with pytest.raises(NotFoundError):
            await backend.stat(key)
