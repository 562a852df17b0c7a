"""docs/api.md is generated from the .proto comments and lists every method of every service."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from apidevs.alerts.v1 import signal_service_pb2, storage_service_pb2, user_service_pb2

DOCUMENT = Path(__file__).resolve().parents[2] / "proto" / "document.py"


def _document_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("proto_document", DOCUMENT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_method_and_message_is_in_the_reference() -> None:
    text = _document_module().render()

    for module in (signal_service_pb2, user_service_pb2, storage_service_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            assert f"## {service.name}" in text
            for method in service.methods:
                assert f"| `{method.name}` |" in text, method.full_name
        for message in module.DESCRIPTOR.message_types_by_name.values():
            assert f"### {message.name}\n" in text, message.full_name


def test_comments_of_the_proto_are_the_descriptions() -> None:
    text = _document_module().render()

    assert (
        "| `GetUser` | [GetUserRequest](#getuserrequest) | [User](#user) | One user, by user_id or by" in text
    )
    assert "| `query` | map<string, string> | 8 | The rest of the query string" in text
