"""POST /webhook/u/{token} answered straight from the ASGI scope, ahead of Litestar's request cycle.

A webhook is the one request the edge serves at thousands a second, and Litestar's cycle (a Request, the
handler's signature model, a Response and its encoding, the exception middleware) cost about as much CPU as
the rest of the webhook's work at the edge. Here the scope goes to edge.webhooks.answer_webhook, the same
contract the declared Litestar route runs, and its answer is sent as Litestar would send it (its JSON
encoder, the same headers). Anything but a plain `POST /webhook/u/<token>` with at most one `chart`
parameter (a trailing slash, a repeated chart) is left to Litestar and its route, which answer as before.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from litestar.datastructures import State
from litestar.serialization import encode_json
from litestar.types import HTTPScope, Receive, Send

from edge.errors import Answer, unexpected_failure
from edge.webhooks import WebhookUrl, answer_webhook

_PREFIX = "/webhook/u/"
_ROUTE = "/webhook/u/{token}"


def webhook_target(scope: HTTPScope) -> WebhookUrl | None:
    """What the URL of a webhook this path answers says; None for anything else."""
    path = scope["path"]
    if scope["method"] != "POST" or not path.startswith(_PREFIX):
        return None
    token = path[len(_PREFIX) :]
    if not token or "/" in token:
        return None
    raw_query = scope["query_string"]
    if not raw_query:
        return WebhookUrl(token, None, [])
    # Litestar's own reading of a query string: blank values kept, '+' a space, UTF-8 after unquoting.
    query = parse_qsl(raw_query.decode("latin-1"), keep_blank_values=True)
    charts = [value for name, value in query if name == "chart"]
    if len(charts) > 1:
        return None
    return WebhookUrl(token, charts[0] if charts else None, query)


async def serve_webhook(
    state: State, scope: HTTPScope, receive: Receive, send: Send, url: WebhookUrl
) -> None:
    try:
        answer = await answer_webhook(state, scope, receive, url)
    except Exception as exc:
        # What Litestar's exception handler answers for the route (edge.errors).
        answer = unexpected_failure("POST", _ROUTE, exc)
    await send_answer(send, answer)


async def send_answer(send: Send, answer: Answer) -> None:
    body = encode_json(answer.body)
    own = answer.headers.items()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in own),
    ]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
