"""Object keys: the one place that decides which names storage accepts.

The rules are strict enough that every backend can use a key unchanged as a path below its root (local),
an object name (GCS) or an S3 key, and that a key can never climb out of its root.
"""

from __future__ import annotations

import unicodedata

from mesh.errors import InvalidArgumentError

MAX_KEY_BYTES = 512


def validate_key(key: str) -> str:
    """Returns ``key`` when it is a safe relative object name; raises InvalidArgumentError otherwise.

    Refused: empty keys, keys over 512 UTF-8 bytes, absolute paths, backslashes, empty, "." or ".."
    segments, and control or other invisible format characters.
    """
    if not key:
        raise InvalidArgumentError("object key is empty", reason="INVALID_OBJECT_KEY")
    if len(key.encode("utf-8", errors="surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidArgumentError(
            f"object key is longer than {MAX_KEY_BYTES} bytes", reason="INVALID_OBJECT_KEY"
        )
    if key.startswith("/"):
        raise InvalidArgumentError("object key must be relative", reason="INVALID_OBJECT_KEY")
    for character in key:
        # Cc: control characters; Cf: invisible formatting (bidi overrides, zero-width); Cs: lone surrogates.
        if unicodedata.category(character) in ("Cc", "Cf", "Cs"):
            raise InvalidArgumentError(
                f"object key contains the character U+{ord(character):04X}", reason="INVALID_OBJECT_KEY"
            )
    if "\\" in key:
        raise InvalidArgumentError("object key contains a backslash", reason="INVALID_OBJECT_KEY")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidArgumentError(
                "object key has an empty, '.' or '..' segment", reason="INVALID_OBJECT_KEY"
            )
    return key


def validate_prefix(prefix: str) -> str:
    """A listing prefix: empty (everything) or a key, optionally ending with '/'."""
    if prefix:
        validate_key(prefix.removesuffix("/"))
    return prefix
