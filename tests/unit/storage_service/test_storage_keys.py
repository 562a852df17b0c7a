import unicodedata
from pathlib import PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.errors import InvalidArgumentError
from storage_service.keys import MAX_KEY_BYTES, validate_key, validate_prefix


@pytest.mark.parametrize(
    "key",
    [
        "screenshots/u_1/2026/11/29/abc.png",
        "a",
        "a/b",
        ".hidden/x",
        "ünïcode/日本.png",
        "spaces are fine.png",
        "x" * MAX_KEY_BYTES,
    ],
)
def test_accepts_relative_keys(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/etc/passwd",
        "../secret",
        "a/../../b",
        "a/..",
        "./a",
        "a//b",
        "a/",
        "a\\..\\b",
        "a\x00b",
        "a\nb",
        "a\x7fb",
        "a\u202eb",  # right-to-left override
        "x" * (MAX_KEY_BYTES + 1),
        "é" * (MAX_KEY_BYTES // 2 + 1),  # under 512 characters, over 512 bytes
    ],
)
def test_refuses_unsafe_keys(key: str) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        validate_key(key)
    assert raised.value.reason == "INVALID_OBJECT_KEY"


def test_prefix_may_end_with_a_slash_or_be_empty() -> None:
    assert validate_prefix("") == ""
    assert validate_prefix("screenshots/u_1/") == "screenshots/u_1/"
    with pytest.raises(InvalidArgumentError):
        validate_prefix("../")


@given(st.text(max_size=600))
def test_every_accepted_key_stays_below_its_root(key: str) -> None:
    try:
        validate_key(key)
    except InvalidArgumentError:
        return
    root = PurePosixPath("/root")
    path = root / key
    assert len(key.encode()) <= MAX_KEY_BYTES
    assert path.is_relative_to(root)
    assert ".." not in path.relative_to(root).parts
    assert all(ord(character) >= 0x20 and character != "\x7f" for character in key)


_SEGMENT = st.text(
    alphabet=st.characters(codec="utf-8", categories=["L", "N"], include_characters="-_. "),
    min_size=1,
    max_size=20,
).filter(lambda segment: segment not in (".", ".."))


@given(st.lists(_SEGMENT, min_size=1, max_size=8))
def test_accepts_keys_built_from_ordinary_segments(segments: list[str]) -> None:
    key = "/".join(segments)
    if len(key.encode()) <= MAX_KEY_BYTES:
        assert validate_key(key) == key


@given(st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=40))
def test_ascii_keys_are_refused_for_exactly_their_first_control_character(text: str) -> None:
    """The ASCII fast path finds what the per-character check over Unicode categories finds."""
    key = "a" + text
    first = next((char for char in key if unicodedata.category(char) in ("Cc", "Cf", "Cs")), None)
    try:
        validate_key(key)
        refusal = ""
    except InvalidArgumentError as exc:
        refusal = str(exc)
    if first is None:
        assert "contains the character" not in refusal
    else:
        assert f"contains the character U+{ord(first):04X}" in refusal
