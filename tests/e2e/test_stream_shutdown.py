"""A signal process told to stop ends its open streams at once with a resumable error, instead of
holding its shutdown for the whole grace period."""

from __future__ import annotations

import asyncio
import os
import signal

import grpc
import pytest

from alerts.processes import ManagedProcess, alerts_argv, free_port, grpc_serving
from apidevs.alerts.v1 import (
    resources_pb2,
    signal_service_pb2,
    signal_service_pb2_grpc,
    user_service_pb2,
    user_service_pb2_grpc,
)
from mesh.errors import from_rpc_error
from mesh.grpc import open_channel
from tests.e2e.stacks import START_TIMEOUT_SECONDS, child_env

pytestmark = pytest.mark.e2e


async def test_sigterm_ends_open_streams_with_server_draining(service_env, service_key, tmp_path) -> None:
    address = f"127.0.0.1:{free_port()}"
    process = ManagedProcess(
        "signal",
        alerts_argv("serve", "signal"),
        # A grace period far longer than the test waits: only draining can end the stream in time.
        child_env(service_env, ALERTS_SIGNAL_ADDR=address, ALERTS_GRPC_GRACE_SECONDS="120"),
        ready=lambda: grpc_serving(address),
        log_path=tmp_path / "signal.log",
    )
    process.start()
    try:
        process.wait_ready(START_TIMEOUT_SECONDS)
        async with open_channel(address, service_key) as channel:
            created = await user_service_pb2_grpc.UserServiceStub(channel).CreateUser(
                user_service_pb2.CreateUserRequest(plan=resources_pb2.PLAN_FREE)
            )
            stream = signal_service_pb2_grpc.SignalServiceStub(channel).SubscribeSignals(
                signal_service_pb2.SubscribeSignalsRequest(user_id=created.user.user_id, after_cursor="0")
            )
            await stream.initial_metadata()
            assert process.process is not None
            os.kill(process.process.pid, signal.SIGTERM)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await asyncio.wait_for(stream.read(), timeout=60)
        error = from_rpc_error(caught.value)
        assert error.code == grpc.StatusCode.UNAVAILABLE
        assert error.reason == "SERVER_DRAINING"
        assert error.metadata["cursor"] == "0"
        assert process.process.wait(timeout=60) == 0
    finally:
        process.stop()
