"""A local stand-in for Discord's webhook API, for tests and the offline demo.

Answers what the notifier uses under ``/api/webhooks/{id}/{token}`` as Discord does: executing a webhook
(``POST``, JSON or multipart with ``payload_json`` and ``files[n]``; with ``?wait=true`` the created
message comes back, with its id) and editing one of its messages (``PATCH .../messages/{message_id}``).
``GET /_stub/requests`` lists every call (the token only as its SHA-256, attachments as their size and
hash); ``POST /_stub/mode`` injects 429s (with ``retry_after``, in the body and the Retry-After header)
and 500s like the Telegram stub (notify_service/stub_failures.py).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from litestar import Litestar, Request, Response, patch, post
from litestar.datastructures import State, UploadFile
from litestar.params import FromPath

from notify_service.stub_failures import StubRecord, create_stub_app, serve_stub

# Discord's ids are snowflakes: large integers, sent as strings.
_FIRST_MESSAGE_ID = 1_300_000_000_000_000_000


@dataclass
class StubState(StubRecord):
    next_message_id: int = _FIRST_MESSAGE_ID
    # (webhook id, message id) -> the message as Discord returns it.
    messages: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


def _state(request: Request[Any, Any, State]) -> StubState:
    state: StubState = request.app.state.stub
    return state


def _error(status: int, message: str, code: int = 0, **extra: Any) -> Response[dict[str, Any]]:
    return Response({"message": message, "code": code, **extra}, status_code=status)


async def _payload(request: Request[Any, Any, State]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The JSON payload and the attached files (as recorded: field, name, type, size, hash)."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form()
        payload: Any = {}
        files = []
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                data = await value.read()
                files.append(
                    {
                        "field": name,
                        "filename": value.filename,
                        "content_type": value.content_type,
                        "bytes": len(data),
                        "sha256": hashlib.sha256(data).hexdigest(),
                    }
                )
            elif name == "payload_json":
                payload = json.loads(value)
        return (payload if isinstance(payload, dict) else {}), files
    body = await request.json() if content_type.startswith("application/json") else {}
    return (body if isinstance(body, dict) else {}), []


def _record(request: Request[Any, Any, State], webhook_id: str, token: str, **entry: Any) -> dict[str, Any]:
    recorded = {
        "webhook_id": webhook_id,
        "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
        "query": dict(request.query_params.items()),
        "received_at": time.time(),
        **entry,
    }
    _state(request).requests.append(recorded)
    return recorded


def _injected_failure(status: int, retry_after: int) -> Response[dict[str, Any]]:
    if status == 429:
        answer = _error(429, "You are being rate limited.", retry_after=retry_after, **{"global": False})
        answer.headers["Retry-After"] = str(retry_after)
        return answer
    return _error(500, "Internal Server Error")


def _answer(recorded: dict[str, Any], answer: Response[Any]) -> Response[Any]:
    # A Response built without a status answers with the route's (200).
    recorded["status"] = answer.status_code or 200
    return answer


@post("/api/webhooks/{webhook_id:str}/{token:str}", status_code=200)
async def execute_webhook(
    request: Request[Any, Any, State], webhook_id: FromPath[str], token: FromPath[str]
) -> Response[Any]:
    stub = _state(request)
    payload, files = await _payload(request)
    recorded = _record(request, webhook_id, token, method="execute", payload=payload, files=files)
    failure = stub.failures.failure(_injected_failure)
    if failure is not None:
        return _answer(recorded, failure)
    if not payload.get("content") and not payload.get("embeds") and not files:
        return _answer(recorded, _error(400, "Cannot send an empty message", 50006))
    message_id = str(stub.next_message_id)
    stub.next_message_id += 1
    message = {
        "id": message_id,
        "type": 0,
        "webhook_id": webhook_id,
        "content": payload.get("content", ""),
        "embeds": payload.get("embeds", []),
        "attachments": [
            {"id": str(index), "filename": file["filename"], "size": file["bytes"]}
            for index, file in enumerate(files)
        ],
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
    }
    stub.messages[(webhook_id, message_id)] = message
    if request.query_params.get("wait") != "true":
        return _answer(recorded, Response(None, status_code=204))
    return _answer(recorded, Response(message))


@patch("/api/webhooks/{webhook_id:str}/{token:str}/messages/{message_id:str}", status_code=200)
async def edit_message(
    request: Request[Any, Any, State],
    webhook_id: FromPath[str],
    token: FromPath[str],
    message_id: FromPath[str],
) -> Response[Any]:
    stub = _state(request)
    payload, files = await _payload(request)
    recorded = _record(
        request, webhook_id, token, method="edit", message_id=message_id, payload=payload, files=files
    )
    failure = stub.failures.failure(_injected_failure)
    if failure is not None:
        return _answer(recorded, failure)
    message = stub.messages.get((webhook_id, message_id))
    if message is None:
        return _answer(recorded, _error(404, "Unknown Message", 10008))
    for name in ("content", "embeds"):
        if name in payload:
            message[name] = payload[name]
    message["edited_timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    return _answer(recorded, Response(message))


def create_discord_stub_app() -> Litestar:
    return create_stub_app([execute_webhook, edit_message], StubState())


def run_discord_stub(host: str = "127.0.0.1", port: int = 8092) -> None:
    serve_stub(create_discord_stub_app(), host, port)
