"""Webhooks reach the signal service in batches when they arrive faster than one call at a time.

Each webhook handler hands its IngestWebhookRequest over and waits for its own answer. While
`max_inflight` BatchIngestWebhooks calls are out, new webhooks wait; the next call takes every webhook
waiting (up to `max_batch`). A lone webhook on a quiet edge goes at once, in a batch of one, so batching
adds no latency; under a burst it saves a gRPC call (and its share of CPU on both sides) per webhook.
"""

from __future__ import annotations

import asyncio
from collections import deque

import grpc
from google.rpc import status_pb2
from prometheus_client import Histogram

from apidevs.alerts.v1 import signal_service_pb2, signal_service_pb2_grpc
from mesh.errors import AlertsError, from_rpc_error, from_rpc_status

WEBHOOK_BATCH_SIZE = Histogram(
    "alerts_webhook_batch_size",
    "Webhooks per BatchIngestWebhooks call from the edge",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)

_Answer = asyncio.Future[signal_service_pb2.IngestWebhookResponse]
_Waiting = tuple[signal_service_pb2.IngestWebhookRequest, _Answer]


class IngestBatcher:
    def __init__(
        self,
        stub: signal_service_pb2_grpc.SignalServiceStub,
        *,
        timeout_seconds: float,
        max_batch: int = 200,
        max_inflight: int = 2,
    ) -> None:
        self._stub = stub
        self._timeout = timeout_seconds
        self._max_batch = max_batch
        self._max_inflight = max_inflight
        self._waiting: deque[_Waiting] = deque()
        self._inflight: set[asyncio.Task[None]] = set()

    async def ingest(
        self, request: signal_service_pb2.IngestWebhookRequest
    ) -> signal_service_pb2.IngestWebhookResponse:
        """IngestWebhook's answer for `request`; raises the AlertsError it would have failed with.

        A caller that stops waiting (its own deadline) before its webhook was sent takes it out of the
        batch; once sent, the webhook may be stored although nobody waits for the answer, as with any call.
        """
        answer: _Answer = asyncio.get_running_loop().create_future()
        self._waiting.append((request, answer))
        self._start_batches()
        return await answer

    def _start_batches(self) -> None:
        while len(self._inflight) < self._max_inflight:
            batch: list[_Waiting] = []
            while self._waiting and len(batch) < self._max_batch:
                request, future = self._waiting.popleft()
                if not future.done():
                    batch.append((request, future))
            if not batch:
                return
            task = asyncio.create_task(self._send(batch))
            self._inflight.add(task)
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._start_batches()

    async def _send(self, batch: list[_Waiting]) -> None:
        WEBHOOK_BATCH_SIZE.observe(len(batch))
        try:
            answer = await self._stub.BatchIngestWebhooks(
                signal_service_pb2.BatchIngestWebhooksRequest(requests=[request for request, _ in batch]),
                timeout=self._timeout,
            )
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                # A signal service from before BatchIngestWebhooks, during a rolling update.
                await asyncio.gather(*(self._send_alone(request, future) for request, future in batch))
                return
            for _, future in batch:
                _settle(future, from_rpc_error(exc))
            return
        for (_, future), result in zip(batch, answer.results, strict=True):
            if result.HasField("response"):
                _settle(future, result.response)
            else:
                _settle(future, from_rpc_status(status_pb2.Status.FromString(result.error_status)))

    async def _send_alone(
        self,
        request: signal_service_pb2.IngestWebhookRequest,
        future: _Answer,
    ) -> None:
        try:
            _settle(future, await self._stub.IngestWebhook(request, timeout=self._timeout))
        except grpc.aio.AioRpcError as exc:
            _settle(future, from_rpc_error(exc))


def _settle(
    future: _Answer,
    outcome: signal_service_pb2.IngestWebhookResponse | AlertsError,
) -> None:
    if future.done():
        return
    if isinstance(outcome, AlertsError):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
