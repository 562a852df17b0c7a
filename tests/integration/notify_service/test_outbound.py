"""The guarded client against real sockets: refused before connecting, unless loopback is allowed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from litestar import Litestar, post
from litestar.response import Redirect

from notify_service.outbound import ForbiddenDestinationError, guarded_client
from tests.support import asgi_app_in_thread


@post("/hook", status_code=200, sync_to_thread=False)
def hook() -> dict[str, bool]:
    return {"received": True}


@post("/elsewhere", sync_to_thread=False)
def elsewhere() -> Redirect:
    return Redirect("http://169.254.169.254/latest/meta-data/", status_code=307)


@pytest.fixture(scope="module")
def receiver() -> Iterator[str]:
    with asgi_app_in_thread(Litestar([hook, elsewhere], openapi_config=None)) as url:
        yield url


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]"])
async def test_a_loopback_url_is_refused_by_default(receiver: str, host: str) -> None:
    port = receiver.rsplit(":", 1)[1]
    async with guarded_client(allow_loopback=False, timeout_seconds=5) as client:
        with pytest.raises(ForbiddenDestinationError, match="loopback"):
            await client.post(f"http://{host}:{port}/hook", json={})


async def test_a_private_address_is_refused_even_in_dev() -> None:
    async with guarded_client(allow_loopback=True, timeout_seconds=5) as client:
        with pytest.raises(ForbiddenDestinationError, match="private"):
            await client.post("http://10.255.255.1:9/hook", json={})


async def test_loopback_is_reached_when_the_dev_setting_allows_it(receiver: str) -> None:
    async with guarded_client(allow_loopback=True, timeout_seconds=5) as client:
        answer = await client.post(f"{receiver}/hook", json={"x": 1})

    assert answer.status_code == 200
    assert answer.json() == {"received": True}


async def test_redirects_are_not_followed(receiver: str) -> None:
    async with guarded_client(allow_loopback=True, timeout_seconds=5) as client:
        answer = await client.post(f"{receiver}/elsewhere", json={})

    assert answer.status_code == 307
    assert answer.headers["location"] == "http://169.254.169.254/latest/meta-data/"
