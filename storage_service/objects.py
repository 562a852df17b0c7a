"""What storage knows about an object, independent of backend and wire format."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    content_type: str
    size_bytes: int
    # Hex SHA-256 of the content, computed by storage while the object was written.
    sha256: str
    created_at: datetime
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ObjectSummary:
    """What a listing returns: enough for usage figures and retention, without a request per object."""

    key: str
    size_bytes: int
    created_at: datetime
