"""`alerts token ...`: access tokens for a user's browser through UserService."""

from __future__ import annotations

import argparse
import json
from typing import Any

from alerts.cli.clients import call_rpc, public_url
from alerts.cli.user import add_user_command


def register(commands: Any) -> None:
    token = commands.add_parser(
        "token", help="read-only access tokens for one user's browser"
    ).add_subparsers(dest="token_command", required=True)
    create = add_user_command(
        token,
        "create",
        help="issue an access token and print it (and a viewer link) once",
        json_help="print the token as one JSON object",
        handler=create_token,
    )
    create.add_argument("--ttl", type=int, default=0, help="lifetime in seconds (default: the service's)")
    add_user_command(
        token,
        "revoke",
        help="refuse every access token of a user issued until now",
        json_help="print the answer as one JSON object",
        handler=revoke_tokens,
    )


def create_token(options: argparse.Namespace) -> int:
    from apidevs.alerts.v1 import user_service_pb2, user_service_pb2_grpc

    issued = call_rpc(
        user_service_pb2_grpc.UserServiceStub,
        "CreateAccessToken",
        user_service_pb2.CreateAccessTokenRequest(user_id=options.user_id, ttl_seconds=options.ttl),
        timeout=10,
    )
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

    revoked = call_rpc(
        user_service_pb2_grpc.UserServiceStub,
        "RevokeAccessTokens",
        user_service_pb2.RevokeAccessTokensRequest(user_id=options.user_id),
        timeout=10,
    )
    revoked_before = revoked.revoked_before.ToJsonString()
    if options.json:
        print(json.dumps({"user_id": options.user_id, "revoked_before": revoked_before}))
        return 0
    print(
        f"access tokens of {options.user_id} issued before {revoked_before} are refused "
        "(within 5 s on every replica)"
    )
    return 0
