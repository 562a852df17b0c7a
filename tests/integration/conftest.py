from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from apidevs.alerts.v1 import signal_service_pb2_grpc, user_service_pb2_grpc
from tests.keys import open_system_channel


@pytest.fixture(scope="session")
async def signal_channel(signal_server: str) -> AsyncIterator[grpc.aio.Channel]:
    channel = open_system_channel(signal_server)
    yield channel
    await channel.close()


@pytest.fixture(scope="session")
def signals(signal_channel: grpc.aio.Channel) -> signal_service_pb2_grpc.SignalServiceStub:
    return signal_service_pb2_grpc.SignalServiceStub(signal_channel)


@pytest.fixture(scope="session")
def users(signal_channel: grpc.aio.Channel) -> user_service_pb2_grpc.UserServiceStub:
    return user_service_pb2_grpc.UserServiceStub(signal_channel)
