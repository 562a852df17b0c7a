"""The keys of a test session, one per role, and a channel that presents, on each call, a key whose role
mesh.roles accepts for that method: tests of other behaviour call every RPC, the servers still check.

Tests of the roles themselves (tests/e2e/test_roles.py) present one key for every call instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc

from mesh.auth import Role, SystemKeys, generate_key
from mesh.grpc import call_metadata
from mesh.logging import request_id_var
from mesh.roles import ROLES_BY_METHOD

SYSTEM_KEYS = SystemKeys.generate()
# A key without a role suffix: the platform's.
PLATFORM_KEY = generate_key()
# What the session's services accept: the platform's key, the operator's (admin), the edge's, the workers'.
ACCEPTED_ENTRIES = [PLATFORM_KEY, *SYSTEM_KEYS.entries()]
# The first of these the table accepts for a method is the one presented.
_PREFERENCE = (
    (Role.ADMIN, SYSTEM_KEYS.operator),
    (Role.EDGE, SYSTEM_KEYS.edge),
    (Role.WORKER, SYSTEM_KEYS.worker),
)


def key_for(method: str) -> str:
    accepted = ROLES_BY_METHOD.get(method, frozenset())
    return next((key for role, key in _PREFERENCE if role in accepted), SYSTEM_KEYS.operator)


class _KeyPerMethod:
    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        for key, value in call_metadata(key_for(method), request_id_var.get()):
            if key not in metadata:
                metadata.add(key, value)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


class _UnaryUnary(_KeyPerMethod, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _UnaryStream(_KeyPerMethod, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _StreamUnary(_KeyPerMethod, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


class _StreamStream(_KeyPerMethod, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


def open_system_channel(address: str) -> grpc.aio.Channel:
    """A channel whose every call carries the key of a role allowed to make it."""
    return grpc.aio.insecure_channel(
        address,
        options=[("grpc.max_receive_message_length", 8 * 1024 * 1024)],
        interceptors=[_UnaryUnary(), _UnaryStream(), _StreamUnary(), _StreamStream()],
    )


def with_service_key(env: Mapping[str, str], process: str) -> dict[str, str]:
    """`env` for `process` (edge, signal, capture-<n>, ...) with the key of its role, as `alerts dev` does."""
    key = SYSTEM_KEYS.for_process(process)
    return {**env, "ALERTS_SERVICE_API_KEY": key} if key else dict(env)
