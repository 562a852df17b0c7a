"""Container health probe: exits 0 when the target is healthy, 1 otherwise.

Compose has no native gRPC health check and grpc_health_probe cannot be installed from a package
registry, so the images carry this script instead:

    python /opt/alerts/healthcheck.py grpc 127.0.0.1:50051 [SERVICE]
    python /opt/alerts/healthcheck.py http http://127.0.0.1:8080/health/ready

Kubernetes does not need it: it probes gRPC health and HTTP natively.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request


def grpc_is_serving(address: str, service: str, timeout_seconds: float) -> bool:
    """True when grpc.health.v1 at `address` reports SERVING for `service` ("" = the whole server)."""
    # Imported here so the HTTP mode also works in images without grpcio (the GCS emulator's).
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_seconds)
        except grpc.RpcError as error:
            print(f"grpc health {address} {service!r}: {error.code().name}", file=sys.stderr)
            return False
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        status_name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        print(f"grpc health {address} {service!r}: {status_name}", file=sys.stderr)
        return False
    return True


def http_is_ok(url: str, timeout_seconds: float) -> bool:
    """True when GET `url` answers with a 2xx status."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {url}")
    try:
        with urllib.request.urlopen(url, timeout=timeout_seconds) as response:  # noqa: S310 (scheme checked)
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError) as error:
        print(f"http health {url}: {error}", file=sys.stderr)
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds before the probe gives up")
    modes = parser.add_subparsers(dest="mode", required=True)
    grpc_mode = modes.add_parser("grpc", help="grpc.health.v1 Check")
    grpc_mode.add_argument("address", help="host:port")
    grpc_mode.add_argument("service", nargs="?", default="", help='service name; "" is the whole server')
    http_mode = modes.add_parser("http", help="GET must answer 2xx")
    http_mode.add_argument("url")
    args = parser.parse_args(argv)
    if args.mode == "grpc":
        healthy = grpc_is_serving(args.address, args.service, args.timeout)
    else:
        healthy = http_is_ok(args.url, args.timeout)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
