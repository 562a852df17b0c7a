"""Shared end-to-end fixtures: the signal service and the edge as real child processes.

`edge_stack` runs on the session's database and Redis namespace with default settings; reuse it for any
test that posts webhooks to a real edge. For other settings start your own with
`tests.e2e.stacks.signal_and_edge(service_env, log_dir, ALERTS_...=...)`, on a `fresh_database` when
its outbox relay must not take the session database's messages into another namespace.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from alerts.stack import Stack
from apidevs.alerts.v1 import signal_service_pb2_grpc, user_service_pb2_grpc
from tests.e2e.stacks import signal_and_edge
from tests.keys import open_system_channel


@pytest.fixture(scope="session")
def edge_stack(service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with signal_and_edge(service_env, tmp_path_factory.mktemp("edge-stack")) as stack:
        yield stack


@pytest.fixture(scope="session")
async def edge_stack_channel(edge_stack: Stack) -> AsyncIterator[grpc.aio.Channel]:
    channel = open_system_channel(edge_stack.signal_addr)
    yield channel
    await channel.close()


@pytest.fixture(scope="session")
def edge_stack_users(edge_stack_channel: grpc.aio.Channel) -> user_service_pb2_grpc.UserServiceStub:
    return user_service_pb2_grpc.UserServiceStub(edge_stack_channel)


@pytest.fixture(scope="session")
def edge_stack_signals(edge_stack_channel: grpc.aio.Channel) -> signal_service_pb2_grpc.SignalServiceStub:
    return signal_service_pb2_grpc.SignalServiceStub(edge_stack_channel)
