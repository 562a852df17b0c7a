"""The UserService gRPC servicer: maps proto <-> users domain."""

from __future__ import annotations

import grpc
from google.protobuf import json_format

from apidevs.alerts.v1 import resources_pb2, user_service_pb2, user_service_pb2_grpc
from mesh.auth import ensure_unscoped
from signal_service.proto_mapping import plan_from_proto, timestamp, user_to_proto
from signal_service.telegram_links.service import TelegramLinks
from signal_service.users.access import AccessTokenManager
from signal_service.users.service import UserManager
from signal_service.visibility import visible_owner


class UserServicer(user_service_pb2_grpc.UserServiceServicer):
    def __init__(
        self, users: UserManager, access_tokens: AccessTokenManager, telegram_links: TelegramLinks
    ) -> None:
        self._users = users
        self._access_tokens = access_tokens
        self._telegram_links = telegram_links

    async def CreateUser(
        self, request: user_service_pb2.CreateUserRequest, context: grpc.aio.ServicerContext
    ) -> user_service_pb2.CreateUserResponse:
        ensure_unscoped()
        issued = await self._users.create(
            external_id=request.external_id,
            plan=plan_from_proto(request.plan) or "free",
            default_chart_id=request.default_chart_id,
            signals_quota=request.signals_quota,
            ip_allowlist=list(request.ip_allowlist),
            notification_preferences=json_format.MessageToDict(request.notification_preferences),
            require_tradingview_client_certificate=request.require_tradingview_client_certificate,
        )
        return user_service_pb2.CreateUserResponse(
            user=user_to_proto(issued.view),
            webhook_token=issued.webhook_token,
            webhook_url=issued.webhook_url,
        )

    async def GetUser(
        self, request: user_service_pb2.GetUserRequest, context: grpc.aio.ServicerContext
    ) -> resources_pb2.User:
        view = await self._users.get(
            user_id=request.user_id, external_id=request.external_id, owner=visible_owner()
        )
        return user_to_proto(view)

    async def ListUsers(
        self, request: user_service_pb2.ListUsersRequest, context: grpc.aio.ServicerContext
    ) -> user_service_pb2.ListUsersResponse:
        ensure_unscoped()
        views, next_page_token = await self._users.list_page(request.page_size, request.page_token)
        return user_service_pb2.ListUsersResponse(
            users=[user_to_proto(view) for view in views], next_page_token=next_page_token
        )

    async def UpdateUser(
        self, request: user_service_pb2.UpdateUserRequest, context: grpc.aio.ServicerContext
    ) -> resources_pb2.User:
        ensure_unscoped()
        source = request.user
        readers = {
            "plan": lambda: plan_from_proto(source.plan),
            "signals_quota": lambda: source.signals_quota,
            "webhook_enabled": lambda: source.webhook_enabled,
            "default_chart_id": lambda: source.default_chart_id,
            "ip_allowlist": lambda: list(source.ip_allowlist),
            "require_tradingview_client_certificate": lambda: source.require_tradingview_client_certificate,
            "notification_preferences": lambda: json_format.MessageToDict(source.notification_preferences),
        }
        values = {path: readers[path]() if path in readers else None for path in request.update_mask.paths}
        return user_to_proto(await self._users.update(source.user_id, values))

    async def RotateWebhookToken(
        self, request: user_service_pb2.RotateWebhookTokenRequest, context: grpc.aio.ServicerContext
    ) -> user_service_pb2.RotateWebhookTokenResponse:
        ensure_unscoped()
        issued = await self._users.rotate_token(request.user_id, request.grace_period_seconds)
        response = user_service_pb2.RotateWebhookTokenResponse(
            webhook_token=issued.webhook_token, webhook_url=issued.webhook_url
        )
        if issued.previous_token_expires_at is not None:
            response.previous_token_expires_at.CopyFrom(timestamp(issued.previous_token_expires_at))
        return response

    async def SetTradingViewSession(
        self, request: user_service_pb2.SetTradingViewSessionRequest, context: grpc.aio.ServicerContext
    ) -> resources_pb2.User:
        ensure_unscoped()
        view = await self._users.set_tradingview_session(
            request.user_id, request.sessionid, request.sessionid_sign
        )
        return user_to_proto(view)

    async def CreateAccessToken(
        self, request: user_service_pb2.CreateAccessTokenRequest, context: grpc.aio.ServicerContext
    ) -> user_service_pb2.CreateAccessTokenResponse:
        ensure_unscoped()
        issued = await self._access_tokens.issue(request.user_id, request.ttl_seconds)
        return user_service_pb2.CreateAccessTokenResponse(
            access_token=issued.token, expires_at=timestamp(issued.expires_at)
        )

    async def RevokeAccessTokens(
        self, request: user_service_pb2.RevokeAccessTokensRequest, context: grpc.aio.ServicerContext
    ) -> user_service_pb2.RevokeAccessTokensResponse:
        ensure_unscoped()
        revoked_before = await self._access_tokens.revoke(request.user_id)
        return user_service_pb2.RevokeAccessTokensResponse(revoked_before=timestamp(revoked_before))

    async def CreateTelegramLink(
        self, request: user_service_pb2.CreateTelegramLinkRequest, context: grpc.aio.ServicerContext
    ) -> user_service_pb2.CreateTelegramLinkResponse:
        ensure_unscoped()
        issued = await self._telegram_links.create(request.user_id)
        return user_service_pb2.CreateTelegramLinkResponse(
            link=issued.link, code=issued.code, expires_at=timestamp(issued.expires_at)
        )

    async def LinkTelegramChat(
        self, request: user_service_pb2.LinkTelegramChatRequest, context: grpc.aio.ServicerContext
    ) -> user_service_pb2.LinkTelegramChatResponse:
        user_id = await self._telegram_links.bind(request.code, request.chat_id)
        return user_service_pb2.LinkTelegramChatResponse(user_id=str(user_id))
