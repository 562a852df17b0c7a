"""The edge passes "TradingView client certificate verified" to the signal service only when it is told to
believe its proxy's X-Forwarded-Client-Cert, only from that proxy, and only for TradingView's subject.

A recording SignalService stands in for the signal server, so that the request the edge sends is what is
checked; test_client_certificate_requirement.py goes through the real signal service."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc
import httpx
import pytest

from apidevs.alerts.v1 import signal_service_pb2, signal_service_pb2_grpc
from tests.integration.edge.conftest import LOOPBACK_PROXY, edge_settings, running_edge
from tests.support import SAMPLE

TRADINGVIEW_XFCC = r'Hash=3f1c;Subject="CN=TradingView Webhooks,O=TradingView\, Inc.,C=US"'
OTHER_XFCC = r'Hash=3f1c;Subject="CN=Someone Else,O=TradingView\, Inc.,C=US"'

# The edge answers a token of the wrong shape itself; this one reaches the (recording) signal service.
WELL_FORMED_TOKEN = "whk_" + "A" * 43


class RecordingSignalService(signal_service_pb2_grpc.SignalServiceServicer):
    def __init__(self) -> None:
        self.requests: list[signal_service_pb2.IngestWebhookRequest] = []

    async def BatchIngestWebhooks(self, request, context):
        self.requests.extend(request.requests)
        return signal_service_pb2.BatchIngestWebhooksResponse(
            results=[
                signal_service_pb2.IngestWebhookResult(
                    response=signal_service_pb2.IngestWebhookResponse(
                        signal_id=f"signal-{len(self.requests)}"
                    )
                )
                for _ in request.requests
            ]
        )


@contextlib.asynccontextmanager
async def recording_signal_server() -> AsyncIterator[tuple[str, RecordingSignalService]]:
    server = grpc.aio.server()
    recorder = RecordingSignalService()
    signal_service_pb2_grpc.add_SignalServiceServicer_to_server(recorder, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", recorder
    finally:
        await server.stop(None)


async def verified_flags(
    service_env: dict[str, str], headers: list[dict[str, str]], **settings
) -> list[bool]:
    async with recording_signal_server() as (address, recorder):
        edge = running_edge(edge_settings(service_env, address, **settings))
        async with edge as url, httpx.AsyncClient(base_url=url) as http:
            for extra in headers:
                answer = await http.post(
                    f"/webhook/u/{WELL_FORMED_TOKEN}",
                    content=SAMPLE,
                    headers={"content-type": "text/plain"} | extra,
                )
                assert answer.status_code == 200, answer.text
        return [request.tradingview_client_certificate_verified for request in recorder.requests]


async def test_a_trusted_proxys_tradingview_certificate_is_passed_along(service_env) -> None:
    flags = await verified_flags(
        service_env,
        [{"x-forwarded-client-cert": TRADINGVIEW_XFCC}, {"x-forwarded-client-cert": OTHER_XFCC}, {}],
        trusted_proxies=[LOOPBACK_PROXY],
        trust_forwarded_client_cert=True,
    )
    assert flags == [True, False, False]


async def test_the_header_is_ignored_unless_the_edge_is_told_to_believe_it(service_env) -> None:
    flags = await verified_flags(
        service_env, [{"x-forwarded-client-cert": TRADINGVIEW_XFCC}], trusted_proxies=[LOOPBACK_PROXY]
    )
    assert flags == [False]


async def test_the_header_is_ignored_from_a_peer_that_is_not_a_trusted_proxy(service_env) -> None:
    flags = await verified_flags(
        service_env,
        [{"x-forwarded-client-cert": TRADINGVIEW_XFCC}],
        trusted_proxies=["192.0.2.0/24"],
        trust_forwarded_client_cert=True,
    )
    assert flags == [False]


def test_believing_the_header_needs_a_trusted_proxy(service_env) -> None:
    with pytest.raises(ValueError, match="ALERTS_TRUSTED_PROXIES"):
        edge_settings(service_env, "127.0.0.1:1", trust_forwarded_client_cert=True)
