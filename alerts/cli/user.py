"""`alerts user ...`: users through UserService. Read commands answer `--json` (one object per line)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from alerts.cli.clients import CommandError, call_rpc, call_signal_service, signal_service_client

PLANS = ("free", "basic", "pro", "premium")
SESSION_VARIABLES = ("TRADINGVIEW_SESSIONID", "TRADINGVIEW_SESSIONID_SIGN")


def register(commands: Any) -> None:
    user = commands.add_parser("user", help="manage users").add_subparsers(dest="user_command", required=True)
    create = user.add_parser("create", help="create a user and print its webhook URL once")
    create.add_argument("--plan", choices=PLANS, default="free")
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

    listing = user.add_parser("list", help="list users in id order")
    listing.add_argument("--limit", type=int, default=0, help="at most this many (default: all)")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(handler=list_users)

    get = user.add_parser("get", help="show one user by id (or --external-id)")
    get.add_argument("user_id", nargs="?", default="")
    get.add_argument("--external-id", default="")
    get.add_argument("--json", action="store_true", help="print the user as one JSON object")
    get.set_defaults(handler=get_user)

    update = add_user_command(
        user, "update", help="change a user's plan, quota, chart or allowlist", handler=update_user
    )
    update.add_argument("--plan", choices=PLANS)
    update.add_argument("--quota", type=int, help="signals per month")
    update.add_argument("--chart", help="default TradingView chart layout id ('' clears it)")
    update.add_argument("--allow", action="append", help="an allowed source CIDR or preset (repeatable)")

    for name, enabled in (("disable", False), ("enable", True)):
        toggle = add_user_command(user, name, help=f"{name} the user's webhook", handler=set_webhook_enabled)
        toggle.set_defaults(enabled=enabled)

    rotate = add_user_command(
        user,
        "rotate-token",
        help="issue a new webhook URL and print it once",
        json_help="print the new URL as one JSON object",
        handler=rotate_token,
    )
    rotate.add_argument("--grace", type=int, default=0, help="seconds the old URL keeps working")

    # Cookies come from the environment, not the command line, where other local users could read them.
    add_user_command(
        user, "set-session", help="store the user's TradingView session cookies", handler=set_session
    )


def add_user_command(
    commands: Any,
    name: str,
    *,
    help: str,
    handler: Callable[[argparse.Namespace], int],
    json_help: str = "print the user as one JSON object",
) -> argparse.ArgumentParser:
    """A command on one user, `<name> USER_ID [--json]`, for the caller to add its other options to."""
    command: argparse.ArgumentParser = commands.add_parser(name, help=help)
    command.add_argument("user_id")
    command.add_argument("--json", action="store_true", help=json_help)
    command.set_defaults(handler=handler)
    return command


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


def _call(method: str, request: Any) -> Any:
    from apidevs.alerts.v1 import user_service_pb2_grpc

    return call_rpc(user_service_pb2_grpc.UserServiceStub, method, request, timeout=30)


def _described(user: Any) -> dict[str, Any]:
    from google.protobuf import json_format

    return json_format.MessageToDict(user, preserving_proto_field_name=True)


def _show(user: Any, as_json: bool) -> int:
    described = _described(user)
    if as_json:
        print(json.dumps(described))
        return 0
    session = described.get("tradingview_session", {})
    print(f"user_id:          {user.user_id}")
    print(f"external_id:      {user.external_id or '-'}")
    print(f"plan:             {described.get('plan', 'PLAN_UNSPECIFIED').removeprefix('PLAN_').lower()}")
    print(f"webhook enabled:  {'yes' if user.webhook_enabled else 'no'}")
    print(f"signals:          {user.signals_used} of {user.signals_quota} this month")
    print(f"default chart:    {user.default_chart_id or '-'}")
    print(f"ip allowlist:     {', '.join(user.ip_allowlist) or 'any'}")
    print(f"tradingview:      {', '.join(f'{k}={v}' for k, v in session.items()) or 'no session'}")
    return 0


def list_users(options: argparse.Namespace) -> int:
    from apidevs.alerts.v1 import resources_pb2, user_service_pb2

    shown, page_token = 0, ""
    while True:
        page = _call("ListUsers", user_service_pb2.ListUsersRequest(page_size=500, page_token=page_token))
        for user in page.users:
            if options.limit and shown >= options.limit:
                return 0
            shown += 1
            if options.json:
                print(json.dumps(_described(user)), flush=True)
            else:
                plan = resources_pb2.Plan.Name(user.plan).removeprefix("PLAN_").lower()
                state = "enabled" if user.webhook_enabled else "disabled"
                print(f"{user.user_id}  {plan:<8} {state:<8} {user.external_id}", flush=True)
        page_token = page.next_page_token
        if not page_token:
            return 0


def get_user(options: argparse.Namespace) -> int:
    from apidevs.alerts.v1 import user_service_pb2

    if bool(options.user_id) == bool(options.external_id):
        raise CommandError("give a user id or --external-id (one of them)")
    request = (
        user_service_pb2.GetUserRequest(user_id=options.user_id)
        if options.user_id
        else user_service_pb2.GetUserRequest(external_id=options.external_id)
    )
    return _show(_call("GetUser", request), options.json)


def _update(user_id: str, paths: list[str], **values: Any) -> Any:
    from google.protobuf import field_mask_pb2

    from apidevs.alerts.v1 import resources_pb2, user_service_pb2

    user = resources_pb2.User(user_id=user_id, **values)
    return _call(
        "UpdateUser",
        user_service_pb2.UpdateUserRequest(user=user, update_mask=field_mask_pb2.FieldMask(paths=paths)),
    )


def update_user(options: argparse.Namespace) -> int:
    from apidevs.alerts.v1 import resources_pb2

    values: dict[str, Any] = {}
    if options.plan:
        values["plan"] = resources_pb2.Plan.Value(f"PLAN_{options.plan.upper()}")
    if options.quota is not None:
        values["signals_quota"] = options.quota
    if options.chart is not None:
        values["default_chart_id"] = options.chart
    if options.allow is not None:
        values["ip_allowlist"] = options.allow
    if not values:
        raise CommandError("nothing to update: give --plan, --quota, --chart or --allow")
    return _show(_update(options.user_id, list(values), **values), options.json)


def set_webhook_enabled(options: argparse.Namespace) -> int:
    updated = _update(options.user_id, ["webhook_enabled"], webhook_enabled=options.enabled)
    return _show(updated, options.json)


def rotate_token(options: argparse.Namespace) -> int:
    from apidevs.alerts.v1 import user_service_pb2

    rotated = _call(
        "RotateWebhookToken",
        user_service_pb2.RotateWebhookTokenRequest(
            user_id=options.user_id, grace_period_seconds=options.grace
        ),
    )
    previous = (
        rotated.previous_token_expires_at.ToJsonString()
        if rotated.HasField("previous_token_expires_at")
        else ""
    )
    if options.json:
        print(json.dumps({"webhook_url": rotated.webhook_url, "previous_token_expires_at": previous}))
        return 0
    print(f"webhook URL: {rotated.webhook_url}")
    print(f"the previous URL works until {previous}" if previous else "the previous URL no longer works")
    print("The webhook URL is shown only once; keep it secret.")
    return 0


def set_session(options: argparse.Namespace) -> int:
    import os

    from apidevs.alerts.v1 import user_service_pb2

    sessionid, sessionid_sign = (os.environ.get(name, "") for name in SESSION_VARIABLES)
    if not sessionid or not sessionid_sign:
        raise CommandError(f"set {' and '.join(SESSION_VARIABLES)} to the user's TradingView cookies")
    updated = _call(
        "SetTradingViewSession",
        user_service_pb2.SetTradingViewSessionRequest(
            user_id=options.user_id, sessionid=sessionid, sessionid_sign=sessionid_sign
        ),
    )
    return _show(updated, options.json)
