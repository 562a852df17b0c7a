"""`alerts user ...`: users through UserService."""

from __future__ import annotations

import argparse
import json
from typing import Any

from alerts.cli.clients import call_signal_service, signal_service_client


def register(commands: Any) -> None:
    user = commands.add_parser("user", help="manage users").add_subparsers(dest="user_command", required=True)
    create = user.add_parser("create", help="create a user and print its webhook URL once")
    create.add_argument("--plan", choices=("free", "basic", "pro", "premium"), default="free")
    create.add_argument("--external-id")
    create.add_argument("--chart", help="default TradingView chart layout id")
    create.add_argument("--sessionid", help="TradingView sessionid cookie")
    create.add_argument("--sessionid-sign", help="TradingView sessionid_sign cookie")
    create.add_argument(
        "--require-tradingview-client-certificate",
        action="store_true",
        help="accept only webhooks whose connection presented TradingView's verified client certificate",
    )
    create.add_argument("--json", action="store_true", help="print the new user as one JSON object")
    create.set_defaults(handler=create_user)


def create_user(options: argparse.Namespace) -> int:
    from apidevs.alerts.v1 import resources_pb2, user_service_pb2, user_service_pb2_grpc
    from mesh.grpc import open_channel

    plan = getattr(resources_pb2, f"PLAN_{options.plan.upper()}")
    address, key = signal_service_client()

    async def create() -> user_service_pb2.CreateUserResponse:
        async with open_channel(address, key) as channel:
            stub = user_service_pb2_grpc.UserServiceStub(channel)
            created = await stub.CreateUser(
                user_service_pb2.CreateUserRequest(
                    external_id=options.external_id or "",
                    plan=plan,
                    default_chart_id=options.chart or "",
                    require_tradingview_client_certificate=options.require_tradingview_client_certificate,
                )
            )
            if options.sessionid and options.sessionid_sign:
                await stub.SetTradingViewSession(
                    user_service_pb2.SetTradingViewSessionRequest(
                        user_id=created.user.user_id,
                        sessionid=options.sessionid,
                        sessionid_sign=options.sessionid_sign,
                    )
                )
            return created

    created = call_signal_service(address, create)
    if options.json:
        user = {
            "user_id": created.user.user_id,
            "plan": options.plan,
            "webhook_url": created.webhook_url,
            "require_tradingview_client_certificate": created.user.require_tradingview_client_certificate,
        }
        print(json.dumps(user))
        return 0
    print(f"user_id:     {created.user.user_id}")
    print(f"plan:        {options.plan}")
    print(f"webhook URL: {created.webhook_url}")
    if created.user.require_tradingview_client_certificate:
        print("webhooks:    only with TradingView's verified client certificate")
    print("The webhook URL is shown only once; keep it secret.")
    return 0
