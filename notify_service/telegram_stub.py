"""A local stand-in for Telegram's Bot API, for tests and the offline demo.

Answers the methods the notifier uses under ``/bot<token>/<method>`` as the Bot API does: ``sendMessage``,
``sendPhoto`` (multipart), ``editMessageCaption``, ``editMessageText``, plus ``getMe`` and ``getUpdates``
(long polling). It enforces Telegram's documented limits, a little loosely (a message per second per chat,
20 a minute per group chat, 30 a second per bot), answering 429 with ``retry_after`` as Telegram does, so a
sender that ignores them shows up as 429s. ``GET /_stub/requests`` lists every call (never the token);
``POST /_stub/mode`` with ``{"mode": "429", "retry_after": 2}``, ``{"mode": "500"}`` or ``{"mode": "ok"}``
(``"count": N`` limits it to the next N calls) injects failures; ``POST /_stub/updates`` queues an update
for ``getUpdates``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from litestar import Litestar, Request, Response, post
from litestar.datastructures import State, UploadFile
from litestar.params import FromPath, JSONBody

from notify_service.stub_failures import StubRecord, create_stub_app, serve_stub

# Looser than Telegram's own figures so a sender pacing at exactly those limits is never refused.
_CHAT_SPACING_SECONDS = 0.9
_GROUP_PER_MINUTE = 21
_BOT_PER_SECOND = 32
# The stub bot's username: t.me links of CreateTelegramLink name it under `alerts dev`/`demo`.
STUB_BOT_USERNAME = "alerts_stub_bot"
_METHODS = ("sendMessage", "sendPhoto", "editMessageCaption", "editMessageText", "getMe", "getUpdates")


@dataclass
class StubState(StubRecord):
    next_message_id: int = 1
    messages: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    chat_last_sent: dict[str, float] = field(default_factory=dict)
    group_sent: dict[str, deque[float]] = field(default_factory=dict)
    bot_sent: deque[float] = field(default_factory=deque)
    updates: list[dict[str, Any]] = field(default_factory=list)
    next_update_id: int = 1
    updates_arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def clear(self) -> None:
        """Forgets the calls received and the sends counted against Telegram's limits."""
        super().clear()
        self.chat_last_sent.clear()
        self.group_sent.clear()
        self.bot_sent.clear()


def _state(request: Request[Any, Any, State]) -> StubState:
    state: StubState = request.app.state.stub
    return state


def _error(code: int, description: str, **parameters: Any) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return Response(body, status_code=code)


def _injected_failure(status: int, retry_after: int) -> Response[dict[str, Any]]:
    if status == 429:
        return _error(429, f"Too Many Requests: retry after {retry_after}", retry_after=retry_after)
    return _error(500, "Internal Server Error")


def _over_limit(stub: StubState, chat_id: str, now: float) -> tuple[int, str]:
    """Seconds to wait when this send breaks Telegram's limits and which limit ("bot", "chat" or
    "group"), else (0, "") and the send is counted."""
    while stub.bot_sent and now - stub.bot_sent[0] >= 1.0:
        stub.bot_sent.popleft()
    if len(stub.bot_sent) >= _BOT_PER_SECOND:
        return 1, "bot"
    last = stub.chat_last_sent.get(chat_id)
    if last is not None and now - last < _CHAT_SPACING_SECONDS:
        return 1, "chat"
    if chat_id.startswith("-"):
        window = stub.group_sent.setdefault(chat_id, deque())
        while window and now - window[0] >= 60.0:
            window.popleft()
        if len(window) >= _GROUP_PER_MINUTE:
            return max(1, int(60.0 - (now - window[0])) + 1), "group"
        window.append(now)
    stub.chat_last_sent[chat_id] = now
    stub.bot_sent.append(now)
    return 0, ""


async def _parameters(request: Request[Any, Any, State]) -> tuple[dict[str, Any], bytes | None]:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data") or content_type.startswith(
        "application/x-www-form-urlencoded"
    ):
        form = await request.form()
        photo: bytes | None = None
        values: dict[str, Any] = {}
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                if name == "photo":
                    photo = await value.read()
            else:
                values[name] = value
        return values, photo
    if content_type.startswith("application/json"):
        body = await request.json()
        return (body if isinstance(body, dict) else {}), None
    return dict(request.query_params.items()), None


@post("/{bot_token:str}/{method:str}", status_code=200)
async def bot_method(
    request: Request[Any, Any, State], bot_token: FromPath[str], method: FromPath[str]
) -> Response[Any]:
    if not bot_token.startswith("bot"):
        return _error(404, "Not Found")
    token = bot_token.removeprefix("bot")
    stub = _state(request)
    params, photo = await _parameters(request)
    now = time.time()
    entry: dict[str, Any] = {
        "method": method,
        "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
        "params": {key: value for key, value in params.items() if key != "photo"},
        "photo_bytes": len(photo) if photo is not None else None,
        "photo_sha256": hashlib.sha256(photo).hexdigest() if photo is not None else None,
        "received_at": now,
    }
    answer = await _answer(stub, method, params, photo, entry)
    # A Response built without a status answers with the route's (200). Recorded once answered, so every
    # entry has its status (a getUpdates long poll answers seconds later).
    entry["status"] = answer.status_code or 200
    stub.requests.append(entry)
    return answer


async def _answer(
    stub: StubState, method: str, params: dict[str, Any], photo: bytes | None, entry: dict[str, Any]
) -> Response[Any]:
    """The Bot API's answer; a send refused for a limit names it in the entry's "limit"."""
    now = entry["received_at"]
    if method not in _METHODS:
        return _error(404, "Not Found: method not found")
    if method == "getMe":
        return Response({"ok": True, "result": {"id": 1, "is_bot": True, "username": STUB_BOT_USERNAME}})
    if method == "getUpdates":
        return await _get_updates(stub, params)
    failure = stub.failures.failure(_injected_failure)
    if failure is not None:
        return failure
    chat_id = str(params.get("chat_id", ""))
    if not chat_id:
        return _error(400, "Bad Request: chat_id is empty")
    if method.startswith("edit"):
        return _edit(stub, method, chat_id, params)
    if method == "sendPhoto" and not photo:
        return _error(400, "Bad Request: there is no photo in the request")
    text_field = "text" if method == "sendMessage" else "caption"
    if method == "sendMessage" and not params.get("text"):
        return _error(400, "Bad Request: message text is empty")
    wait, entry["limit"] = _over_limit(stub, chat_id, now)
    if wait:
        return _error(429, f"Too Many Requests: retry after {wait}", retry_after=wait)
    message_id = stub.next_message_id
    stub.next_message_id += 1
    message: dict[str, Any] = {
        "message_id": message_id,
        "chat": {"id": int(chat_id) if chat_id.lstrip("-").isdigit() else chat_id},
        "date": int(now),
        text_field: params.get(text_field, ""),
    }
    if photo is not None:
        message["photo"] = [{"file_id": hashlib.sha256(photo).hexdigest()[:32], "file_size": len(photo)}]
    reply_to = params.get("reply_to_message_id")
    if reply_to:
        message["reply_to_message"] = {"message_id": int(reply_to)}
    stub.messages[(chat_id, message_id)] = message
    return Response({"ok": True, "result": message})


def _edit(stub: StubState, method: str, chat_id: str, params: dict[str, Any]) -> Response[Any]:
    try:
        message_id = int(params.get("message_id", ""))
    except ValueError:
        return _error(400, "Bad Request: message identifier is not specified")
    message = stub.messages.get((chat_id, message_id))
    if message is None:
        return _error(400, "Bad Request: message to edit not found")
    field_name = "caption" if method == "editMessageCaption" else "text"
    if field_name not in message:
        return _error(400, "Bad Request: there is no " + field_name + " in the message to edit")
    new = params.get(field_name, "")
    if message[field_name] == new:
        return _error(400, "Bad Request: message is not modified")
    message[field_name] = new
    return Response({"ok": True, "result": message})


async def _get_updates(stub: StubState, params: dict[str, Any]) -> Response[Any]:
    offset = int(params.get("offset") or 0)
    timeout = min(float(params.get("timeout") or 0), 30.0)
    stub.updates = [update for update in stub.updates if update["update_id"] >= offset]
    if not stub.updates and timeout > 0:
        stub.updates_arrived.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stub.updates_arrived.wait(), timeout)
    return Response({"ok": True, "result": list(stub.updates)})


@post("/_stub/updates", status_code=200, sync_to_thread=False)
def queue_update(request: Request[Any, Any, State], data: JSONBody[dict[str, Any]]) -> dict[str, Any]:
    stub = _state(request)
    update = {**data, "update_id": stub.next_update_id}
    stub.next_update_id += 1
    stub.updates.append(update)
    stub.updates_arrived.set()
    return update


def create_telegram_stub_app() -> Litestar:
    return create_stub_app([bot_method, queue_update], StubState())


def run_telegram_stub(host: str = "127.0.0.1", port: int = 8091) -> None:
    serve_stub(create_telegram_stub_app(), host, port)
