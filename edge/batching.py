"""Webhooks reach the signal service in batches when they arrive faster than one call at a time.

Each webhook handler hands its IngestWebhookRequest over and waits for its own answer. While
`max_inflight` BatchIngestWebhooks calls are out, new webhooks wait; the next call takes every webhook
waiting (up to `max_batch`; see mesh/coalescer.py). A lone webhook on a quiet edge goes at once, in a batch
of one, so batching adds no latency; under a burst it saves a gRPC call (and its share of CPU on both
sides) per webhook.
"""

from __future__ import annotations

import asyncio

import grpc
from google.rpc import status_pb2
from prometheus_client import Histogram

from apidevs.alerts.v1 import signal_service_pb2, signal_service_pb2_grpc
from apidevs.alerts.v1.signal_service_pb2 import IngestWebhookRequest, IngestWebhookResponse
from mesh.coalescer import Coalescer
from mesh.errors import AlertsError, from_rpc_error, from_rpc_status
from mesh.grpc import call_metadata

WEBHOOK_BATCH_SIZE = Histogram(
    "alerts_webhook_batch_size",
    "Webhooks per BatchIngestWebhooks call from the edge",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)


class IngestBatcher:
    def __init__(
        self,
        stub: signal_service_pb2_grpc.SignalServiceAsyncStub,
        *,
        api_key: str | None,
        timeout_seconds: float,
        max_batch: int = 200,
        max_inflight: int = 2,
    ) -> None:
        # The stub's channel is opened with per_call_metadata (mesh.grpc): each call carries its own.
        self._stub = stub
        self._api_key = api_key
        self._timeout = timeout_seconds
        self._calls: Coalescer[IngestWebhookRequest, IngestWebhookResponse]
        self._calls = Coalescer(self._send, max_batch=max_batch, max_inflight=max_inflight)

    async def ingest(self, request: IngestWebhookRequest) -> IngestWebhookResponse:
        """IngestWebhook's answer for `request`; raises the AlertsError it would have failed with.

        A caller that stops waiting (its own deadline) before its webhook was sent takes it out of the
        batch; once sent, the webhook may be stored although nobody waits for the answer, as with any call.
        """
        return await self._calls.submit(request)

    def queue_delay_seconds(self) -> float:
        """How long the oldest webhook not yet sent has been waiting for a call to go out."""
        return self._calls.oldest_wait_seconds()

    async def _send(self, requests: list[IngestWebhookRequest]) -> list[IngestWebhookResponse | AlertsError]:
        WEBHOOK_BATCH_SIZE.observe(len(requests))
        try:
            answer = await self._stub.BatchIngestWebhooks(
                signal_service_pb2.BatchIngestWebhooksRequest(requests=requests),
                timeout=self._timeout,
                metadata=call_metadata(self._api_key, requests[0].request_id),
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                # A signal service from before BatchIngestWebhooks, during a rolling update.
                return list(await asyncio.gather(*(self._send_alone(request) for request in requests)))
            return [from_rpc_error(exc) for _ in requests]
        return [
            result.response
            if result.HasField("response")
            else from_rpc_status(status_pb2.Status.FromString(result.error_status))
            for result in answer.results
        ]

    async def _send_alone(self, request: IngestWebhookRequest) -> IngestWebhookResponse | AlertsError:
        try:
            return await self._stub.IngestWebhook(
                request, timeout=self._timeout, metadata=call_metadata(self._api_key, request.request_id)
            )
        except grpc.aio.AioRpcError as exc:
            return from_rpc_error(exc)
