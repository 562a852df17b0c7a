"""HTTP to addresses traders supply (their webhook, their Discord webhook) that can never reach inside.

The host is resolved when the connection opens and every address it resolves to must be public: no
loopback, private, link-local (cloud metadata lives there), multicast, reserved or unspecified address,
IPv4-mapped forms included. The connection then goes to the vetted address itself, so a DNS answer that
changes between the check and the connect (rebinding) cannot slip through; TLS still verifies the name.
Redirects are not followed here; a caller that follows one sends it through this transport again.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

MAX_RESPONSE_BYTES = 64 * 1024


class ForbiddenDestinationError(httpx.TransportError):
    """The URL's host resolves to an address a user-supplied URL may not reach."""


def forbidden_reason(address: ipaddress.IPv4Address | ipaddress.IPv6Address, *, allow_loopback: bool) -> str:
    """Why `address` may not be reached from a user-supplied URL, or "" when it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return forbidden_reason(address.ipv4_mapped, allow_loopback=allow_loopback)
    if address.is_loopback:
        return "" if allow_loopback else "loopback"
    checks = (
        ("unspecified", address.is_unspecified),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("not globally routable", not address.is_global),
    )
    return next((name for name, hit in checks if hit), "")


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, *, allow_loopback: bool) -> None:
        self._allow_loopback = allow_loopback
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
        if not addresses:
            raise httpcore.ConnectError(f"{host} does not resolve")
        for address in addresses:
            reason = forbidden_reason(address, allow_loopback=self._allow_loopback)
            if reason:
                raise ForbiddenDestinationError(f"{host} resolves to a {reason} address")
        return await self._inner.connect_tcp(
            str(addresses[0]),
            port,
            timeout=timeout,
            local_address=local_address,
            socket_options=socket_options,
        )

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport whose every connection passes the destination check above."""

    def __init__(self, *, allow_loopback: bool = False) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            network_backend=_GuardedBackend(allow_loopback=allow_loopback), max_connections=50
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        try:
            response = await self._pool.handle_async_request(core_request)
            body = b""
            try:
                async for chunk in response.aiter_stream():
                    body += chunk
                    if len(body) > MAX_RESPONSE_BYTES:
                        break
            finally:
                await response.aclose()
        except ForbiddenDestinationError:
            raise
        except httpcore.TimeoutException as exc:
            raise httpx.TimeoutException(str(exc), request=request) from exc
        except httpcore.NetworkError as exc:
            raise httpx.NetworkError(str(exc), request=request) from exc
        except httpcore.ProtocolError as exc:
            raise httpx.RemoteProtocolError(str(exc), request=request) from exc
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            content=body[:MAX_RESPONSE_BYTES],
            request=request,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


def guarded_client(*, allow_loopback: bool, timeout_seconds: float) -> httpx.AsyncClient:
    """The client for user-supplied URLs: guarded connections, no proxies from the environment, no
    redirects."""
    return httpx.AsyncClient(
        transport=GuardedTransport(allow_loopback=allow_loopback),
        timeout=timeout_seconds,
        follow_redirects=False,
        trust_env=False,
    )
