"""The ApiKeyService gRPC servicer: maps proto <-> API keys domain."""

from __future__ import annotations

import grpc

from apidevs.alerts.v1 import api_key_service_pb2, api_key_service_pb2_grpc
from mesh.auth import Role
from mesh.errors import InvalidArgumentError
from signal_service.api_keys.service import ApiKeyManager
from signal_service.models import ApiKey
from signal_service.proto_mapping import timestamp

_ROLE_TO_PROTO = {
    Role.PLATFORM: api_key_service_pb2.API_KEY_ROLE_PLATFORM,
    Role.ADMIN: api_key_service_pb2.API_KEY_ROLE_ADMIN,
    Role.EDGE: api_key_service_pb2.API_KEY_ROLE_EDGE,
    Role.WORKER: api_key_service_pb2.API_KEY_ROLE_WORKER,
    Role.USER: api_key_service_pb2.API_KEY_ROLE_USER,
}
_ROLE_FROM_PROTO = {value: role for role, value in _ROLE_TO_PROTO.items()}


def api_key_to_proto(row: ApiKey) -> api_key_service_pb2.ApiKey:
    return api_key_service_pb2.ApiKey(
        key_id=str(row.id),
        name=row.name,
        role=_ROLE_TO_PROTO[Role(row.role)],
        user_id=str(row.user_id) if row.user_id else "",
        fingerprint=row.key_hash[:12],
        created_at=timestamp(row.created_at),
        revoked_at=timestamp(row.revoked_at),
    )


class ApiKeyServicer(api_key_service_pb2_grpc.ApiKeyServiceServicer):
    def __init__(self, keys: ApiKeyManager) -> None:
        self._keys = keys

    async def CreateApiKey(
        self, request: api_key_service_pb2.CreateApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> api_key_service_pb2.CreateApiKeyResponse:
        role = _ROLE_FROM_PROTO.get(request.role)
        if role is None:
            raise InvalidArgumentError("role is required", reason="INVALID_ROLE")
        stored, key = await self._keys.create(role=role, name=request.name, user_id=request.user_id)
        return api_key_service_pb2.CreateApiKeyResponse(api_key=api_key_to_proto(stored), key=key)

    async def ListApiKeys(
        self, request: api_key_service_pb2.ListApiKeysRequest, context: grpc.aio.ServicerContext
    ) -> api_key_service_pb2.ListApiKeysResponse:
        rows = await self._keys.list(include_revoked=request.include_revoked)
        return api_key_service_pb2.ListApiKeysResponse(api_keys=[api_key_to_proto(row) for row in rows])

    async def RevokeApiKey(
        self, request: api_key_service_pb2.RevokeApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> api_key_service_pb2.ApiKey:
        return api_key_to_proto(await self._keys.revoke(request.key_id))
