from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from apidevs.alerts.v1 import (
    api_key_service_pb2,
    signal_service_pb2,
    storage_service_pb2,
    user_service_pb2,
)
from mesh.auth import ApiKeyRing, Principal, Role, SystemKeys, parse_entry, principal_var, role_entry
from mesh.errors import PermissionDeniedError, UnauthenticatedError
from mesh.roles import (
    PUBLIC_METHODS,
    ROLES_BY_METHOD,
    ensure_edge_fields_from_edge,
    ensure_may_call,
    may_call,
)

_OUR_SERVICES = [
    *api_key_service_pb2.DESCRIPTOR.services_by_name.values(),
    *signal_service_pb2.DESCRIPTOR.services_by_name.values(),
    *user_service_pb2.DESCRIPTOR.services_by_name.values(),
    *storage_service_pb2.DESCRIPTOR.services_by_name.values(),
]
_OPEN_SERVICES = [
    *health_pb2.DESCRIPTOR.services_by_name.values(),
    *reflection_pb2.DESCRIPTOR.services_by_name.values(),
]


def _methods(services) -> set[str]:
    return {f"/{service.full_name}/{method.name}" for service in services for method in service.methods}


def test_every_rpc_of_every_service_has_an_entry() -> None:
    ours = _methods(_OUR_SERVICES)
    assert ours, "no services found in the descriptors"
    assert sorted(ours - ROLES_BY_METHOD.keys()) == []
    assert sorted(ROLES_BY_METHOD.keys() - ours) == [], "entries for methods that do not exist"
    assert all(ROLES_BY_METHOD.values()), "an entry that accepts no role"


def test_health_and_reflection_are_explicitly_public_and_nothing_else_is() -> None:
    assert _methods(_OPEN_SERVICES) == PUBLIC_METHODS


def test_a_method_outside_the_table_is_refused_for_every_role() -> None:
    for role in Role:
        assert not may_call("/apidevs.alerts.v1.SignalService/NotARealMethod", role)
        with pytest.raises(PermissionDeniedError):
            ensure_may_call("/apidevs.alerts.v1.SignalService/NotARealMethod", role)


@pytest.mark.parametrize(
    ("role", "allowed", "refused"),
    [
        (
            Role.PLATFORM,
            ["UserService/CreateUser", "SignalService/ListSignals"],
            [
                "SignalService/IngestWebhook",
                "SignalService/ClaimCapture",
                "SignalService/ReportCapture",
                "SignalService/RetryCaptures",
                "StorageService/PutObject",
            ],
        ),
        (
            Role.ADMIN,
            ["SignalService/RetryCaptures", "UserService/CreateUser"],
            ["SignalService/ClaimCapture"],
        ),
        (
            Role.EDGE,
            ["SignalService/IngestWebhook", "SignalService/BatchIngestWebhooks", "StorageService/GetObject"],
            [
                "SignalService/ListSignals",
                "UserService/CreateUser",
                "SignalService/ClaimCapture",
                "StorageService/PutObject",
            ],
        ),
        (
            Role.WORKER,
            [
                "SignalService/ClaimCapture",
                "SignalService/ReportCapture",
                "StorageService/PutObject",
                "StorageService/GetObject",
            ],
            [
                "SignalService/ListSignals",
                "SignalService/GetSignal",
                "UserService/GetUser",
                "SignalService/IngestWebhook",
            ],
        ),
        (
            Role.USER,
            ["SignalService/ListSignals", "UserService/GetUser"],
            [
                "UserService/CreateUser",
                "SignalService/ClaimCapture",
                "StorageService/GetObject",
            ],
        ),
    ],
)
def test_what_each_role_may_call(role: Role, allowed: list[str], refused: list[str]) -> None:
    for method in allowed:
        assert may_call(f"/apidevs.alerts.v1.{method}", role), method
    for method in refused:
        assert not may_call(f"/apidevs.alerts.v1.{method}", role), method


def test_entries_name_their_role() -> None:
    ring = ApiKeyRing(["plain", "e@role:edge", role_entry("w", Role.WORKER), "a@role:admin", "u@user:u-1"])
    assert ring.authenticate("Bearer plain").role is Role.PLATFORM
    assert ring.authenticate("Bearer e").role is Role.EDGE
    assert ring.authenticate("Bearer w").role is Role.WORKER
    assert ring.authenticate("Bearer a").role is Role.ADMIN
    scoped = ring.authenticate("Bearer u")
    assert (scoped.role, scoped.user_scope) == (Role.USER, "u-1")


@pytest.mark.parametrize(
    "entry", ["k@role:root", "k@role:user", "k@role:", "k@user:", "k@role:edge@user:u-1"]
)
def test_malformed_entries_are_refused_without_the_key(entry: str) -> None:
    with pytest.raises(ValueError, match=r"API key [0-9a-f]{12}: ") as raised:
        parse_entry(entry)
    assert "k@" not in str(raised.value)


def test_edge_only_fields_are_honoured_from_the_edge_alone() -> None:
    forged = signal_service_pb2.IngestWebhookRequest(webhook_token="t", source_ip="203.0.113.9")
    forged.received_at.GetCurrentTime()
    plain = signal_service_pb2.IngestWebhookRequest(webhook_token="t", body=b"x", chart_id="abc")
    for role in (Role.PLATFORM, Role.ADMIN, Role.WORKER):
        token = principal_var.set(Principal(key_fingerprint="f", role=role))
        try:
            ensure_edge_fields_from_edge([plain])
            with pytest.raises(PermissionDeniedError) as raised:
                ensure_edge_fields_from_edge([plain, forged])
            assert "received_at, source_ip" in raised.value.message
            assert raised.value.code is grpc.StatusCode.PERMISSION_DENIED
        finally:
            principal_var.reset(token)
    token = principal_var.set(Principal(key_fingerprint="f", role=Role.EDGE))
    try:
        ensure_edge_fields_from_edge([forged])
    finally:
        principal_var.reset(token)


def test_a_system_gives_the_edge_and_the_workers_keys_of_their_own_role() -> None:
    keys = SystemKeys.generate()
    ring = ApiKeyRing(keys.entries())
    assert ring.authenticate(f"Bearer {keys.operator}").role is Role.ADMIN
    assert ring.authenticate(f"Bearer {keys.for_process('edge')}").role is Role.EDGE
    for process in ("signal", "capture-0", "capture-3"):
        assert ring.authenticate(f"Bearer {keys.for_process(process)}").role is Role.WORKER
    assert keys.for_process("storage") is None
    assert keys.for_process("chart-stub") is None
    given = ApiKeyRing(keys.entries(["platform-key"]))
    assert given.authenticate("Bearer platform-key").role is Role.PLATFORM
    with pytest.raises(UnauthenticatedError):
        given.authenticate(f"Bearer {keys.operator}")
