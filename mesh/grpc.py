"""gRPC bootstrap for every service: one server shape, one channel shape.

Servers get Bearer API-key authentication and the role check of :mod:`mesh.roles` (health and
reflection stay open), the mapping of
:class:`mesh.errors.AlertsError` to status codes, request ids in logs, and latency metrics; `serve` adds
the library health service and reflection and drains on SIGTERM. Channels are long-lived, keep
themselves alive, and carry the caller's key and the current request id on every call. With
``ALERTS_GRPC_TLS_CERT/KEY/CA`` set, servers and channels speak mutual TLS: each side presents its
certificate and accepts only peers whose certificate that CA signed.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import signal
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from mesh.access_tokens import AccessTokens
from mesh.auth import ApiKeyRing, RuntimeKeys, principal_var
from mesh.errors import (
    AlertsError,
    InternalError,
    PermissionDeniedError,
    UnauthenticatedError,
    UnavailableError,
    to_grpc_status,
)
from mesh.logging import request_id_var
from mesh.metrics import GRPC_HANDLED, GRPC_IN_FLIGHT, GRPC_LATENCY
from mesh.roles import PUBLIC_METHODS, ensure_may_call
from mesh.runtime import freeze_startup_heap
from mesh.settings import CommonSettings

log = logging.getLogger(__name__)

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")
# grpc's stubs describe a method handler's behaviours as the sync server calls them; under grpc.aio they
# are coroutine functions (unary responses) and async generators (streamed responses).
_AsyncUnaryBehavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
_AsyncStreamBehavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]]

_KEEPALIVE_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
# A peer that comes back is reached within a second: gRPC's defaults back off up to two minutes between
# attempts (1 s first, x1.6, +-20% jitter) and give an attempt at least 20 s, during which calls on the
# channel fail fast and the edge keeps spooling. An attempt at a peer that is down costs one refused
# connect, so retrying twice a second is cheap; 1 s is ample for a TCP and HTTP/2 handshake in a cluster.
_RECONNECT_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 1_000),
]
_SERVER_OPTIONS = [
    *_KEEPALIVE_OPTIONS,
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
]


def new_request_id() -> str:
    """32 random hex digits, as uuid4().hex gave, at a seventh of its cost: the edge makes one per webhook."""
    return os.urandom(16).hex()


ErrorTranslator = Callable[[BaseException], AlertsError | None]


def _no_translation(exc: BaseException) -> AlertsError | None:
    return None


# The serving server's translator of failures that are not domain errors (a dependency down, say), set per
# call by its interceptor so that every path to `caller_error` uses it, batch items included.
_translate_error: contextvars.ContextVar[ErrorTranslator] = contextvars.ContextVar(
    "translate_error", default=_no_translation
)


class _ServerInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, keys: ApiKeyRing, translate_error: ErrorTranslator) -> None:
        self._keys = keys
        self._translate_error = translate_error

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[_Request, _Response] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Request, _Response] | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method in PUBLIC_METHODS:
            return handler
        # Metadata keys are text; values are bytes only for "-bin" keys, which are none of these two.
        metadata = {key: str(value) for key, value in handler_call_details.invocation_metadata}
        request_id_var.set(metadata.get("x-request-id") or new_request_id())
        _translate_error.set(self._translate_error)
        rejection: AlertsError | None = None
        try:
            principal = self._keys.authenticate(metadata.get("authorization"))
            ensure_may_call(method, principal.role)
            principal_var.set(principal)
        except (UnauthenticatedError, PermissionDeniedError, UnavailableError) as exc:
            # Unavailable: the signal service cannot tell yet whether a token or runtime key was revoked.
            rejection = exc
        return _wrap_handler(handler, method.rsplit("/", 1)[-1], rejection)


def caller_error(exc: Exception, method: str) -> AlertsError:
    """What a caller is told of a handler's failure: a domain error as it is; a failure the server's
    translator knows (a dependency unreachable: UNAVAILABLE, so callers retry or spool) as it says; anything
    unexpected is logged here, once, and becomes a bare INTERNAL, since its message may carry what no
    caller should see. Log records carry the call's request id (mesh.logging)."""
    if isinstance(exc, AlertsError):
        return exc
    translated = _translate_error.get()(exc)
    if translated is not None:
        # Expected while a dependency restarts: the type is enough, no traceback per call.
        log.warning(
            "dependency unavailable",
            extra={"method": method, "reason": translated.reason, "error_type": type(exc).__name__},
        )
        return translated
    log.error("unhandled error", extra={"method": method}, exc_info=exc)
    return InternalError("internal error")


async def _abort(context: grpc.aio.ServicerContext[Any, Any], error: AlertsError) -> None:
    await context.abort_with_status(to_grpc_status(error))


def _code_name(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    # None until a code is set, whatever the stubs say.
    code: object = context.code()
    return code.name if isinstance(code, grpc.StatusCode) else "OK"


@contextlib.asynccontextmanager
async def _call_outcome(
    context: grpc.aio.ServicerContext[Any, Any], method: str, *, timed: bool
) -> AsyncIterator[None]:
    """Turns what a handler raised into its status (see caller_error) and counts the call by outcome."""
    started = time.perf_counter()
    code = "OK"
    GRPC_IN_FLIGHT.inc()
    try:
        yield
    except AlertsError as exc:
        code = exc.code.name
        await _abort(context, exc)
    except grpc.aio.AbortError:
        code = _code_name(context)
        raise
    except asyncio.CancelledError:
        code = "CANCELLED"
        raise
    except Exception as exc:
        error = caller_error(exc, method)
        code = error.code.name
        await _abort(context, error)
    finally:
        GRPC_IN_FLIGHT.dec()
        GRPC_HANDLED.labels(method, code).inc()
        if timed:
            GRPC_LATENCY.labels(method).observe(time.perf_counter() - started)


def _wrap_handler(
    handler: grpc.RpcMethodHandler[_Request, _Response], method: str, rejection: AlertsError | None
) -> grpc.RpcMethodHandler[_Request, _Response]:
    async def unary_response(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        behavior = cast(_AsyncUnaryBehavior, handler.unary_unary or handler.stream_unary)
        async with _call_outcome(context, method, timed=True):
            if rejection is not None:
                raise rejection
            return await behavior(request, context)

    async def stream_response(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        behavior = cast(_AsyncStreamBehavior, handler.unary_stream or handler.stream_stream)
        # A stream's duration is its subscriber's lifetime, not a latency: only its outcome is counted.
        async with _call_outcome(context, method, timed=False):
            if rejection is not None:
                raise rejection
            async for item in behavior(request, context):
                yield item

    decode, encode = handler.request_deserializer, handler.response_serializer
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary_response, decode, encode)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary_response, decode, encode)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(stream_response, decode, encode)
    return grpc.stream_stream_rpc_method_handler(stream_response, decode, encode)


@dataclass(frozen=True, repr=False)
class GrpcTls:
    """This process's certificate and key, and the CA its peers' certificates must chain to."""

    certificate_chain: bytes
    private_key: bytes
    root_certificates: bytes

    @classmethod
    def from_settings(cls, settings: CommonSettings) -> GrpcTls | None:
        if settings.grpc_tls_cert is None or settings.grpc_tls_key is None or settings.grpc_tls_ca is None:
            return None
        return cls(
            certificate_chain=settings.grpc_tls_cert.read_bytes(),
            private_key=settings.grpc_tls_key.read_bytes(),
            root_certificates=settings.grpc_tls_ca.read_bytes(),
        )

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.private_key, self.certificate_chain)],
            root_certificates=self.root_certificates,
            require_client_auth=True,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )


def create_server(
    settings: CommonSettings,
    *,
    translate_error: ErrorTranslator = _no_translation,
    access_tokens: AccessTokens | None = None,
    runtime_keys: RuntimeKeys | None = None,
) -> grpc.aio.Server:
    """A server with the shared interceptor; `translate_error` maps failures that are not domain errors
    to the error callers get (None leaves them INTERNAL), e.g. signal_service.database.database_error;
    `access_tokens` and `runtime_keys` (the signal service's) accept browsers' access tokens and keys
    created at runtime beside the configured (bootstrap) keys."""
    keys = ApiKeyRing(settings.api_keys, access_tokens=access_tokens, runtime_keys=runtime_keys)
    if not keys:
        raise RuntimeError("no API keys configured (ALERTS_API_KEYS): every call would be refused")
    return grpc.aio.server(interceptors=[_ServerInterceptor(keys, translate_error)], options=_SERVER_OPTIONS)


async def start(
    server: grpc.aio.Server, *, address: str, service_names: Sequence[str], tls: GrpcTls | None = None
) -> tuple[int, health.aio.HealthServicer]:
    """Adds health and reflection, binds and starts; returns the bound port (address may use port 0)."""
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
        server,
    )
    if tls is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, tls.server_credentials())
    if port == 0:
        raise RuntimeError(f"cannot bind gRPC server to {address}")
    await server.start()
    for name in ("", *service_names):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return port, health_servicer


async def serve(
    server: grpc.aio.Server,
    *,
    address: str,
    service_names: Sequence[str],
    on_draining: Callable[[], None] | None = None,
    on_stop: Callable[[], Awaitable[None]] | None = None,
    grace_seconds: float = 10.0,
    tls: GrpcTls | None = None,
) -> None:
    """Serves until SIGTERM or SIGINT, then reports NOT_SERVING, drains in-flight calls and stops.

    `on_draining` runs before the grace period, for calls that would otherwise hold it to the end
    (server streams); `on_stop` runs after the server stopped.
    """
    port, health_servicer = await start(server, address=address, service_names=service_names, tls=tls)
    freeze_startup_heap()
    log.info("gRPC server listening", extra={"address": address, "port": port})
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    log.info("shutting down", extra={"grace_seconds": grace_seconds})
    await health_servicer.enter_graceful_shutdown()
    if on_draining is not None:
        on_draining()
    await server.stop(grace_seconds)
    if on_stop is not None:
        await on_stop()
    log.info("stopped")


class _CallMetadata:
    """Adds the caller's key and the current request id to a call's metadata."""

    def __init__(self, api_key: str | None) -> None:
        self._api_key = api_key

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        for key, value in call_metadata(self._api_key, request_id_var.get()):
            if metadata.get(key) is None:
                metadata.add(key, value)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


# grpc.aio files each interceptor under the first of the four kinds it is, so each kind needs its own class.
class _UnaryUnaryMetadata(_CallMetadata, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, _Request], Awaitable[grpc.aio.UnaryUnaryCall[_Request, _Response]]
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request: _Request,
    ) -> grpc.aio.UnaryUnaryCall[_Request, _Response]:
        return await continuation(self._details(client_call_details), request)


class _UnaryStreamMetadata(_CallMetadata, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, _Request], Awaitable[grpc.aio.UnaryStreamCall[_Request, _Response]]
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request: _Request,
    ) -> grpc.aio.UnaryStreamCall[_Request, _Response]:
        return await continuation(self._details(client_call_details), request)


_RequestStream = AsyncIterable[_Request] | Iterable[_Request]


class _StreamUnaryMetadata(_CallMetadata, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, _RequestStream[_Request]],
            Awaitable[grpc.aio.StreamUnaryCall[_Request, _Response]],
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: _RequestStream[_Request],
    ) -> grpc.aio.StreamUnaryCall[_Request, _Response]:
        return await continuation(self._details(client_call_details), request_iterator)


class _StreamStreamMetadata(_CallMetadata, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, _RequestStream[_Request]],
            Awaitable[grpc.aio.StreamStreamCall[_Request, _Response]],
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: _RequestStream[_Request],
    ) -> grpc.aio.StreamStreamCall[_Request, _Response]:
        return await continuation(self._details(client_call_details), request_iterator)


_METADATA_INTERCEPTORS = (
    _UnaryUnaryMetadata,
    _UnaryStreamMetadata,
    _StreamUnaryMetadata,
    _StreamStreamMetadata,
)


def open_channel(
    address: str, api_key: str | None, *, per_call_metadata: bool = False, tls: GrpcTls | None = None
) -> grpc.aio.Channel:
    """One long-lived channel per process and peer; it reconnects by itself.

    Calls carry the key and the current request id, added by interceptors; with `per_call_metadata` the
    caller passes `call_metadata(...)` itself instead. grpc.aio runs every intercepted call in a task of its
    own, about a tenth of the edge's CPU per webhook, so the edge's hot path goes without.
    """
    options = [
        *_KEEPALIVE_OPTIONS,
        ("grpc.max_receive_message_length", 8 * 1024 * 1024),
        *_RECONNECT_OPTIONS,
    ]
    interceptors = None if per_call_metadata else [kind(api_key) for kind in _METADATA_INTERCEPTORS]
    if tls is None:
        return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)
    credentials = tls.channel_credentials()
    return grpc.aio.secure_channel(address, credentials, options=options, interceptors=interceptors)


def call_metadata(api_key: str | None, request_id: str) -> tuple[tuple[str, str], ...]:
    """What the interceptors of `open_channel` add, for a call on a channel opened with per_call_metadata."""
    metadata = (("x-request-id", request_id),) if request_id else ()
    return (("authorization", f"Bearer {api_key}"), *metadata) if api_key else metadata
