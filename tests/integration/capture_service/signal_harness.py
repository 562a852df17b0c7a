"""A recording SignalService for the worker tests, served over real gRPC with the real interceptors.

Temporary: it stands in for signal_service's ClaimCapture/ReportCapture until the end-to-end tests run
the whole system. It answers as the contract says (proceed=false once COMPLETED, NOT_FOUND for unknown
signals) and records every call the worker makes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from google.protobuf import timestamp_pb2

from apidevs.alerts.v1 import resources_pb2, signal_service_pb2, signal_service_pb2_grpc
from mesh.errors import NotFoundError

_FINAL = (resources_pb2.SCREENSHOT_STATUS_COMPLETED, resources_pb2.SCREENSHOT_STATUS_FAILED)


@dataclass
class CaptureCase:
    signal: resources_pb2.Signal
    chart_id: str
    session_ciphertext: bytes
    plan: int = resources_pb2.PLAN_PREMIUM
    status: int = resources_pb2.SCREENSHOT_STATUS_PENDING


@dataclass
class RecordedClaim:
    request: signal_service_pb2.ClaimCaptureRequest
    request_id: str


@dataclass
class RecordingSignalService(signal_service_pb2_grpc.SignalServiceServicer):
    cases: dict[str, CaptureCase] = field(default_factory=dict)
    claims: list[RecordedClaim] = field(default_factory=list)
    reports: list[signal_service_pb2.ReportCaptureRequest] = field(default_factory=list)
    # Wall-clock time of each signal's last report, comparable with the chart stub's received_at.
    reported_at: dict[str, float] = field(default_factory=dict)
    claim_delay_seconds: float = 0.0

    def reset(self) -> None:
        self.cases.clear()
        self.claims.clear()
        self.reports.clear()
        self.reported_at.clear()
        self.claim_delay_seconds = 0.0

    def add(
        self,
        signal_id: str,
        *,
        user_id: str,
        ticker: str,
        ciphertext: bytes,
        interval: str = "",
        chart_id: str = "",
    ) -> CaptureCase:
        created_at = timestamp_pb2.Timestamp()
        created_at.FromDatetime(dt.datetime(2026, 11, 27, 14, 30, tzinfo=dt.UTC))
        signal = resources_pb2.Signal(
            signal_id=signal_id, user_id=user_id, ticker=ticker, interval=interval, created_at=created_at
        )
        case = CaptureCase(signal=signal, chart_id=chart_id, session_ciphertext=ciphertext)
        self.cases[signal_id] = case
        return case

    def finished(self, signal_id: str) -> list[signal_service_pb2.ReportCaptureRequest]:
        return [
            report
            for report in self.reports
            if report.signal_id == signal_id
            and report.status
            in (resources_pb2.SCREENSHOT_STATUS_COMPLETED, resources_pb2.SCREENSHOT_STATUS_FAILED)
        ]

    async def ClaimCapture(
        self, request: signal_service_pb2.ClaimCaptureRequest, context: grpc.aio.ServicerContext
    ) -> signal_service_pb2.ClaimCaptureResponse:
        metadata = dict(context.invocation_metadata() or ())
        self.claims.append(RecordedClaim(request=request, request_id=str(metadata.get("x-request-id", ""))))
        if self.claim_delay_seconds:
            await asyncio.sleep(self.claim_delay_seconds)
        case = self.cases.get(request.signal_id)
        if case is None:
            raise NotFoundError("no capture for this signal", reason="CAPTURE_NOT_FOUND")
        if case.status == resources_pb2.SCREENSHOT_STATUS_COMPLETED:
            return signal_service_pb2.ClaimCaptureResponse(proceed=False, signal=case.signal)
        case.status = resources_pb2.SCREENSHOT_STATUS_PROCESSING
        return signal_service_pb2.ClaimCaptureResponse(
            proceed=True,
            signal=case.signal,
            chart_id=case.chart_id,
            tradingview_session_ciphertext=case.session_ciphertext,
            plan=case.plan,
        )

    async def ReportCapture(
        self, request: signal_service_pb2.ReportCaptureRequest, context: grpc.aio.ServicerContext
    ) -> resources_pb2.Signal:
        self.reports.append(request)
        self.reported_at[request.signal_id] = time.time()
        case = self.cases[request.signal_id]
        case.status = request.status
        return case.signal


async def eventually(condition: Callable[[], bool], *, what: str, within: float) -> None:
    """Waits for something another process does; fails the test when it does not happen in time."""
    try:
        async with asyncio.timeout(within):
            while not condition():  # noqa: ASYNC110 - the condition depends on other processes
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"gave up after {within:g} s waiting for {what}") from None
