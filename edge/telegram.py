"""``POST /telegram/webhook``: the platform bot's updates, posted by Telegram (production).

Telegram is told this URL and a secret token once (setWebhook with ``secret_token`` set to
ALERTS_TELEGRAM_WEBHOOK_SECRET) and sends the token back in ``X-Telegram-Bot-Api-Secret-Token`` with
every update; anything without it is refused. A trader's ``/start <code>`` goes to
UserService.LinkTelegramChat, and the answer asks Telegram to tell the chat the outcome (a webhook answer
may carry one Bot API call, so the edge needs no bot token). Other updates are acknowledged and ignored.
When the signal service is away the answer is 503 and Telegram delivers the update again later.
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any

import grpc
from litestar import Request, Response, post

from apidevs.alerts.v1 import user_service_pb2, user_service_pb2_grpc
from edge.settings import EdgeSettings
from mesh.errors import InvalidArgumentError, NotFoundError, UnauthenticatedError, from_rpc_error
from mesh.telegram_updates import LINKED_TEXT, NOT_LINKED_TEXT, SECRET_TOKEN_HEADER, start_command

log = logging.getLogger(__name__)

_LINK_TIMEOUT_SECONDS = 10.0
# Telegram's updates are small; a message is at most 4,096 characters.
_MAX_UPDATE_BYTES = 256 * 1024


@post(
    "/telegram/webhook",
    include_in_schema=False,
    status_code=200,
    request_max_body_size=_MAX_UPDATE_BYTES,
)
async def telegram_webhook(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    settings: EdgeSettings = request.app.state.settings
    secret = settings.telegram_webhook_secret
    if secret is None:
        raise NotFoundError("not found")
    given = request.headers.get(SECRET_TOKEN_HEADER, "")
    if not hmac.compare_digest(given.encode(), secret.get_secret_value().encode()):
        raise UnauthenticatedError("wrong or missing Telegram secret token", reason="TELEGRAM_SECRET")
    try:
        update = json.loads(await request.body())
    except ValueError:
        raise InvalidArgumentError("the body is not a JSON update", reason="INVALID_UPDATE") from None
    command = start_command(update)
    if command is None:
        return Response({})
    users: user_service_pb2_grpc.UserServiceAsyncStub = request.app.state.user_stub
    link = user_service_pb2.LinkTelegramChatRequest(code=command.code, chat_id=command.chat_id)
    try:
        await users.LinkTelegramChat(link, timeout=_LINK_TIMEOUT_SECONDS)
    except grpc.aio.AioRpcError as exc:
        error = from_rpc_error(exc)
        if not isinstance(error, NotFoundError | InvalidArgumentError):
            raise error from exc
        log.info("telegram link refused", extra={"reason": error.reason})
        text = NOT_LINKED_TEXT
    else:
        log.info("telegram chat linked")
        text = LINKED_TEXT
    return Response({"method": "sendMessage", "chat_id": command.chat_id, "text": text})
