"""`alerts api-keys ...`: API keys created, listed and revoked at runtime through ApiKeyService (admin).

Keys configured in ALERTS_API_KEYS (the bootstrap) are not listed here and stay until reconfigured.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from alerts.cli.clients import call_rpc

ROLES = ("platform", "admin", "edge", "worker", "user")


def register(commands: Any) -> None:
    api_keys = commands.add_parser("api-keys", help="API keys managed at runtime (admin key required)")
    key_commands = api_keys.add_subparsers(dest="api_keys_command", required=True)
    create = key_commands.add_parser("create", help="create a key and print it once")
    create.add_argument("--role", choices=ROLES, required=True)
    create.add_argument("--name", required=True, help="who or what holds the key")
    create.add_argument("--user", default="", help="the user a 'user' key reads")
    create.add_argument("--json", action="store_true", help="print the key as one JSON object")
    create.set_defaults(handler=create_key)
    listing = key_commands.add_parser("list", help="list the runtime keys (never the keys themselves)")
    listing.add_argument("--all", action="store_true", help="revoked keys too")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(handler=list_keys)
    revoke = key_commands.add_parser("revoke", help="refuse a key on every replica within 5 s")
    revoke.add_argument("key_id")
    revoke.add_argument("--json", action="store_true", help="print the revoked key as one JSON object")
    revoke.set_defaults(handler=revoke_key)


def _described(key: Any) -> dict[str, str]:
    from apidevs.alerts.v1 import api_key_service_pb2

    return {
        "key_id": key.key_id,
        "name": key.name,
        "role": api_key_service_pb2.ApiKeyRole.Name(key.role).removeprefix("API_KEY_ROLE_").lower(),
        "user_id": key.user_id,
        "fingerprint": key.fingerprint,
        "created_at": key.created_at.ToJsonString(),
        "revoked_at": key.revoked_at.ToJsonString() if key.HasField("revoked_at") else "",
    }


def _call(method: str, request: Any) -> Any:
    from apidevs.alerts.v1 import api_key_service_pb2_grpc

    return call_rpc(api_key_service_pb2_grpc.ApiKeyServiceStub, method, request, timeout=10)


def create_key(options: argparse.Namespace) -> int:
    from apidevs.alerts.v1 import api_key_service_pb2

    role = api_key_service_pb2.ApiKeyRole.Value(f"API_KEY_ROLE_{options.role.upper()}")
    created = _call(
        "CreateApiKey",
        api_key_service_pb2.CreateApiKeyRequest(role=role, name=options.name, user_id=options.user),
    )
    described = _described(created.api_key)
    if options.json:
        print(json.dumps({**described, "key": created.key}))
        return 0
    print(f"key_id: {described['key_id']}")
    print(
        f"role:   {described['role']}" + (f" (user {described['user_id']})" if described["user_id"] else "")
    )
    print(f"key:    {created.key}")
    print("The key is shown only once; keep it secret.")
    return 0


def list_keys(options: argparse.Namespace) -> int:
    from apidevs.alerts.v1 import api_key_service_pb2

    listed = _call("ListApiKeys", api_key_service_pb2.ListApiKeysRequest(include_revoked=options.all))
    rows = [_described(key) for key in listed.api_keys]
    if options.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    if not rows:
        print("no runtime API keys")
    for row in rows:
        state = f"revoked {row['revoked_at']}" if row["revoked_at"] else "active"
        user = f" user {row['user_id']}" if row["user_id"] else ""
        print(f"{row['key_id']}  {row['role']:<8} {row['fingerprint']}  {state}  {row['name']}{user}")
    return 0


def revoke_key(options: argparse.Namespace) -> int:
    from apidevs.alerts.v1 import api_key_service_pb2

    revoked = _described(
        _call("RevokeApiKey", api_key_service_pb2.RevokeApiKeyRequest(key_id=options.key_id))
    )
    if options.json:
        print(json.dumps(revoked))
        return 0
    print(f"API key {revoked['key_id']} ({revoked['name']}) revoked at {revoked['revoked_at']}")
    return 0
