"""`alerts token ...`: access tokens for a user's browser through UserService."""

from __future__ import annotations

import argparse
import json
from typing import Any

from alerts.cli.clients import call_signal_service, public_url, signal_service_client


def register(commands: Any) -> None:
    token = commands.add_parser(
        "token", help="read-only access tokens for one user's browser"
    ).add_subparsers(dest="token_command", required=True)
    create = token.add_parser("create", help="issue an access token and print it (and a viewer link) once")
    create.add_argument("user_id")
    create.add_argument("--ttl", type=int, default=0, help="lifetime in seconds (default: the service's)")
    create.add_argument("--json", action="store_true", help="print the token as one JSON object")
    create.set_defaults(handler=create_token)
    revoke = token.add_parser("revoke", help="refuse every access token of a user issued until now")
    revoke.add_argument("user_id")
    revoke.add_argument("--json", action="store_true", help="print the answer as one JSON object")
    revoke.set_defaults(handler=revoke_tokens)


def create_token(options: argparse.Namespace) -> int:
    from apidevs.alerts.v1 import user_service_pb2, user_service_pb2_grpc
    from mesh.grpc import open_channel

    address, key = signal_service_client()

    async def create() -> user_service_pb2.CreateAccessTokenResponse:
        async with open_channel(address, key) as channel:
            return await user_service_pb2_grpc.UserServiceStub(channel).CreateAccessToken(
                user_service_pb2.CreateAccessTokenRequest(user_id=options.user_id, ttl_seconds=options.ttl),
                timeout=10,
            )

    issued = call_signal_service(address, create)
    expires_at = issued.expires_at.ToJsonString()
    viewer_link = f"{public_url()}/ui#token={issued.access_token}"
    if options.json:
        print(
            json.dumps({"access_token": issued.access_token, "expires_at": expires_at, "viewer": viewer_link})
        )
        return 0
    print(f"access token: {issued.access_token}")
    print(f"expires at:   {expires_at}")
    print(f"viewer link:  {viewer_link}")
    print("Read-only, for this one user; `alerts token revoke` ends every token issued so far.")
    return 0


def revoke_tokens(options: argparse.Namespace) -> int:
    from apidevs.alerts.v1 import user_service_pb2, user_service_pb2_grpc
    from mesh.grpc import open_channel

    address, key = signal_service_client()

    async def revoke() -> user_service_pb2.RevokeAccessTokensResponse:
        async with open_channel(address, key) as channel:
            return await user_service_pb2_grpc.UserServiceStub(channel).RevokeAccessTokens(
                user_service_pb2.RevokeAccessTokensRequest(user_id=options.user_id), timeout=10
            )

    revoked = call_signal_service(address, revoke)
    revoked_before = revoked.revoked_before.ToJsonString()
    if options.json:
        print(json.dumps({"user_id": options.user_id, "revoked_before": revoked_before}))
        return 0
    print(
        f"access tokens of {options.user_id} issued before {revoked_before} are refused "
        "(within 5 s on every replica)"
    )
    return 0
