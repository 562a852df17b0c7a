"""Which roles may call each RPC: one table for every server, enforced by the server interceptor.

A method missing from the table is refused (PERMISSION_DENIED) whoever calls it; a test walks the proto
descriptors and fails when a method has no entry. Health and reflection are public: load balancers and
tooling call them without a key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from google.protobuf.message import Message

from mesh.auth import Role, current_principal
from mesh.errors import PermissionDeniedError

_SIGNAL = "/apidevs.alerts.v1.SignalService/"
_USER = "/apidevs.alerts.v1.UserService/"
_STORAGE = "/apidevs.alerts.v1.StorageService/"
_API_KEY = "/apidevs.alerts.v1.ApiKeyService/"

PUBLIC_METHODS = frozenset(
    {
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.health.v1.Health/List",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    }
)

# Access tokens (VIEWER) read one user's data and write nothing.
_READERS = frozenset({Role.PLATFORM, Role.ADMIN, Role.USER, Role.VIEWER})
_PLATFORM = frozenset({Role.PLATFORM, Role.ADMIN})
_EDGE = frozenset({Role.EDGE})
_WORKER = frozenset({Role.WORKER})

ROLES_BY_METHOD: Mapping[str, frozenset[Role]] = {
    _SIGNAL + "IngestWebhook": _EDGE,
    _SIGNAL + "BatchIngestWebhooks": _EDGE,
    _SIGNAL + "GetSignal": _READERS,
    _SIGNAL + "ListSignals": _READERS,
    # Keys scoped to one user (@user:<id>) and access tokens read only.
    _SIGNAL + "UpdateSignalOutcome": _PLATFORM,
    _SIGNAL + "GetUserStats": _READERS,
    _SIGNAL + "SubscribeSignals": _READERS,
    _SIGNAL + "ClaimCapture": _WORKER,
    _SIGNAL + "ReportCapture": _WORKER,
    _SIGNAL + "ClaimSessionCheck": _WORKER,
    _SIGNAL + "ReportSessionCheck": _WORKER,
    _SIGNAL + "ListFailedCaptures": _READERS,
    _SIGNAL + "RetryCaptures": frozenset({Role.ADMIN}),
    _SIGNAL + "ClaimNotification": _WORKER,
    _SIGNAL + "ReportNotification": _WORKER,
    _SIGNAL + "ListFailedNotifications": _READERS,
    _SIGNAL + "RetryNotifications": frozenset({Role.ADMIN}),
    # The edge's readiness check asks it too.
    _SIGNAL + "GetServiceStatus": _PLATFORM | _EDGE,
    _USER + "CreateUser": _PLATFORM,
    _USER + "GetUser": _READERS,
    _USER + "ListUsers": _PLATFORM,
    _USER + "UpdateUser": _PLATFORM,
    _USER + "RotateWebhookToken": _PLATFORM,
    _USER + "SetTradingViewSession": _PLATFORM,
    _USER + "CreateAccessToken": _PLATFORM,
    _USER + "RevokeAccessTokens": _PLATFORM,
    _USER + "CreateTelegramLink": _PLATFORM,
    # Whoever receives the bot's updates: the edge (Telegram's webhook) or a notify worker (polling).
    _USER + "LinkTelegramChat": _EDGE | _WORKER,
    # Keys grant roles, admin among them: only an admin manages them.
    _API_KEY + "CreateApiKey": frozenset({Role.ADMIN}),
    _API_KEY + "ListApiKeys": frozenset({Role.ADMIN}),
    _API_KEY + "RevokeApiKey": frozenset({Role.ADMIN}),
    # Workers upload screenshots; the signal service, with a worker key, asks for URLs and deletes
    # expired objects (it holds the database and cookie keys already: a worker key grants it nothing new).
    _STORAGE + "PutObject": _WORKER,
    _STORAGE + "GetObjectUrl": _WORKER,
    _STORAGE + "GetObjectUrls": _WORKER,
    _STORAGE + "DeleteObject": _WORKER,
    _STORAGE + "DeleteObjects": _WORKER,
    # The edge serves /media (signed links it checked) from it.
    # The edge serves /media; notify workers send the chart itself to Telegram and Discord.
    _STORAGE + "GetObject": _EDGE | _WORKER,
}

# IngestWebhookRequest fields only the edge knows: where and when a webhook arrived, the spool's replay
# id (which also skips rate limits), and refusals the edge made on its own.
EDGE_ONLY_INGEST_FIELDS = frozenset({"source_ip", "received_at", "idempotency_key", "edge_refusal"})


def may_call(method: str, role: Role) -> bool:
    return role in ROLES_BY_METHOD.get(method, ())


def ensure_may_call(method: str, role: Role) -> None:
    if not may_call(method, role):
        raise PermissionDeniedError(
            f"the {role.value} role may not call {method.rsplit('/', 1)[-1]}", reason="ROLE"
        )


def ensure_edge_fields_from_edge(requests: Iterable[Message]) -> None:
    """Refuses edge-only fields set by anyone but the edge: they decide allowlists and rate limits."""
    if current_principal().role is Role.EDGE:
        return
    for request in requests:
        forged = sorted(
            field.name for field, _ in request.ListFields() if field.name in EDGE_ONLY_INGEST_FIELDS
        )
        if forged:
            raise PermissionDeniedError(
                f"only the edge may set {', '.join(forged)}", reason="EDGE_ONLY_FIELD"
            )
