"""What a caller may see: a user-scoped key sees its own user's objects, and any other user's object
answers exactly like one that does not exist (same status, message and details), so that ids and
external ids cannot be probed for existence. The scope is checked before any lookup, or is part of it."""

from __future__ import annotations

import uuid

from mesh.auth import current_principal, ensure_unscoped
from mesh.errors import NotFoundError
from signal_service.ids import require_uuid

# Matches no user: the owner a scope that is not a user id can see.
_NOBODY = uuid.UUID(int=0)


def no_such_user() -> NotFoundError:
    return NotFoundError("no such user", reason="USER_NOT_FOUND")


def no_such_signal() -> NotFoundError:
    return NotFoundError("no such signal", reason="SIGNAL_NOT_FOUND")


def visible_owner() -> uuid.UUID | None:
    """The only user whose objects the caller may see; None when it may see every user's."""
    scope = current_principal().user_scope
    if scope is None:
        return None
    try:
        return uuid.UUID(scope)
    except ValueError:
        return _NOBODY


def ensure_user_visible(user_id: uuid.UUID) -> None:
    """Before looking `user_id` up: a scoped caller asking for another user gets the missing user's answer."""
    owner = visible_owner()
    if owner is not None and owner != user_id:
        raise no_such_user()


def visible_user_id(user_id: str) -> uuid.UUID:
    """A request's `user_id`, parsed (INVALID_ARGUMENT when it is no UUID), once the caller may see it."""
    parsed = require_uuid(user_id, "user_id")
    ensure_user_visible(parsed)
    return parsed


def ensure_listing_visible(user_id: str) -> None:
    """Before listing one user's objects, or every user's when `user_id` is empty (unscoped callers only)."""
    if user_id:
        visible_user_id(user_id)
    else:
        ensure_unscoped()
