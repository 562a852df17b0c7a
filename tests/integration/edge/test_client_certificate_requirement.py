"""A user who requires TradingView's client certificate: through an edge that believes its proxy's
X-Forwarded-Client-Cert, a webhook with TradingView's verified certificate is stored and one without is
refused with 403 `client_certificate_required` and audited."""

from __future__ import annotations

import uuid

import httpx

from tests.integration.edge.conftest import LOOPBACK_PROXY, audit_rows, edge_settings, running_edge
from tests.integration.edge.test_client_certificate_header import OTHER_XFCC, TRADINGVIEW_XFCC
from tests.support import SAMPLE, create_user


async def test_only_a_webhook_with_tradingviews_verified_certificate_is_stored(
    service_env, signal_server, users, db
) -> None:
    created = await create_user(users, require_tradingview_client_certificate=True)
    settings = edge_settings(
        service_env, signal_server, trusted_proxies=[LOOPBACK_PROXY], trust_forwarded_client_cert=True
    )
    async with running_edge(settings) as url, httpx.AsyncClient(base_url=url, timeout=10) as http:

        async def post(body: bytes, headers: dict[str, str]) -> httpx.Response:
            return await http.post(
                f"/webhook/u/{created.webhook_token}",
                content=body,
                headers={"content-type": "text/plain"} | headers,
            )

        accepted = await post(SAMPLE, {"x-forwarded-client-cert": TRADINGVIEW_XFCC})
        assert accepted.status_code == 200, accepted.text
        refusals = [
            await post(b"BINANCE:BTCUSDT someone else", {"x-forwarded-client-cert": OTHER_XFCC}),
            await post(b"BINANCE:BTCUSDT no certificate", {}),
        ]
    for refused in refusals:
        assert refused.status_code == 403
        assert refused.json() == {"success": False, "error": "client_certificate_required"}
    rows = await audit_rows(
        db, "user_id = $1 AND outcome = 'refused'", uuid.UUID(created.user.user_id), at_least=2
    )
    assert [row["reason"] for row in rows] == ["CLIENT_CERTIFICATE_REQUIRED"] * 2
