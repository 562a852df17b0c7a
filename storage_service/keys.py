"""Object keys: the one place that decides which names storage accepts.

The rules are strict enough that every backend can use a key unchanged as a path below its root (local),
an object name (GCS) or an S3 key, and that a key can never climb out of its root.
"""

from __future__ import annotations

import re
import unicodedata

from mesh.errors import InvalidArgumentError

MAX_KEY_BYTES = 512
_ASCII_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


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
    # ASCII holds no Cf or Cs character and its Cc are C0 and DEL: one C-level search instead of a
    # Python loop over every character (a replay page asks for a thousand keys' URLs).
    invisible = _ASCII_CONTROL.search(key) if key.isascii() else _first_invisible(key)
    if invisible is not None:
        raise InvalidArgumentError(
            f"object key contains the character U+{ord(invisible[0]):04X}", reason="INVALID_OBJECT_KEY"
        )
    if "\\" in key:
        raise InvalidArgumentError("object key contains a backslash", reason="INVALID_OBJECT_KEY")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidArgumentError(
                "object key has an empty, '.' or '..' segment", reason="INVALID_OBJECT_KEY"
            )
    return key


def _first_invisible(key: str) -> str | None:
    for character in key:
        # Cc: control characters; Cf: invisible formatting (bidi overrides, zero-width); Cs: lone surrogates.
        if unicodedata.category(character) in ("Cc", "Cf", "Cs"):
            return character
    return None


def validate_prefix(prefix: str) -> str:
    """A listing prefix: empty (everything) or a key, optionally ending with '/'."""
    if prefix:
        validate_key(prefix.removesuffix("/"))
    return prefix
