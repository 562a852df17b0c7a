"""Which requests the raw webhook path takes ahead of Litestar, and what it reads from them."""

from __future__ import annotations

from typing import Any

import pytest

from edge.webhook_fast_path import webhook_target
from edge.webhooks import WebhookUrl

TOKEN = "whk_" + "A" * 43


def scope(method: str = "POST", path: str = f"/webhook/u/{TOKEN}", query: bytes = b"") -> Any:
    return {"type": "http", "method": method, "path": path, "query_string": query, "headers": []}


def test_a_plain_webhook_is_taken_with_its_token() -> None:
    assert webhook_target(scope()) == WebhookUrl(TOKEN, None, [])


def test_the_chart_and_every_other_parameter_are_read_as_litestar_reads_them() -> None:
    taken = webhook_target(scope(query=b"chart=abc_1&note=a+b%20c&empty=&x=%C3%A9"))
    query = [("chart", "abc_1"), ("note", "a b c"), ("empty", ""), ("x", "é")]
    assert taken == WebhookUrl(TOKEN, "abc_1", query)


def test_a_malformed_token_is_still_taken_so_that_it_is_refused_and_audited_the_same_way() -> None:
    assert webhook_target(scope(path="/webhook/u/whk_short")) == WebhookUrl("whk_short", None, [])


@pytest.mark.parametrize(
    "request_scope",
    [
        scope(method="GET"),
        scope(method="PUT"),
        scope(path=f"/webhook/u/{TOKEN}/"),
        scope(path=f"/webhook/u/{TOKEN}/more"),
        scope(path="/webhook/u/"),
        scope(path="/webhook/x/abc"),
        scope(path="/health/live"),
        scope(query=b"chart=a&chart=b"),
    ],
    ids=["get", "put", "trailing-slash", "deeper", "no-token", "other-prefix", "other-route", "two-charts"],
)
def test_anything_else_is_left_to_litestar(request_scope: Any) -> None:
    assert webhook_target(request_scope) is None
