"""Container health probe: exits 0 when the target is healthy, 1 otherwise.

Compose has no native gRPC health check and grpc_health_probe cannot be installed from a package
registry, so the images carry this script instead:

    python /opt/alerts/healthcheck.py grpc 127.0.0.1:50051 [SERVICE]
    python /opt/alerts/healthcheck.py http http://127.0.0.1:8080/health/ready
    python /opt/alerts/healthcheck.py spool-drained http://127.0.0.1:8080/metrics --wait 100
    python /opt/alerts/healthcheck.py capture-alive http://127.0.0.1:9100/metrics --max-job-age 90

Kubernetes probes gRPC health and HTTP natively, but runs the spool-drained mode as the edge's preStop hook:
it waits until the edge's durable spool is empty, so webhooks already answered 202 are replayed to the
signal service before the pod goes away, not left on a volume no pod may mount again soon. The capture
workers' liveness probe is capture-alive: their metrics server answers even when the worker is stuck, so
it reads the heartbeat of the actors' event loop and the start of the oldest running job from it
(capture_service/liveness.py) and fails when either is too old.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.error
import urllib.request

SPOOL_PENDING_METRIC = "alerts_spool_pending"
HEARTBEAT_METRIC = "alerts_capture_heartbeat_timestamp_seconds"
OLDEST_JOB_METRIC = "alerts_capture_oldest_job_started_timestamp_seconds"
# Every edge worker process publishes the spool's shared totals, a non-leader's up to one replayer poll
# (1 s) late: zero must be read this many times in a row, a poll apart, to count as drained.
_DRAINED_READINGS = 2


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


def read_gauges(metrics_url: str, names: tuple[str, ...], timeout_seconds: float) -> dict[str, float] | None:
    """The unlabelled gauges `names` found in the Prometheus text at `metrics_url`; None if unreadable."""
    if not metrics_url.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {metrics_url}")
    try:
        with urllib.request.urlopen(metrics_url, timeout=timeout_seconds) as response:  # noqa: S310
            text = response.read().decode()
    except (urllib.error.URLError, OSError) as error:
        print(f"metrics {metrics_url}: {error}", file=sys.stderr)
        return None
    found = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in names:
            found[name] = float(value.split()[0])
    return found


def spool_pending(metrics_url: str, timeout_seconds: float) -> float | None:
    """The edge's alerts_spool_pending from its Prometheus text at `metrics_url`; None if unreadable."""
    gauges = read_gauges(metrics_url, (SPOOL_PENDING_METRIC,), timeout_seconds)
    if gauges is None:
        return None
    if SPOOL_PENDING_METRIC not in gauges:
        print(f"spool metrics {metrics_url}: no {SPOOL_PENDING_METRIC}", file=sys.stderr)
        return None
    return gauges[SPOOL_PENDING_METRIC]


def capture_is_alive(
    metrics_url: str, *, max_heartbeat_age: float, max_job_age: float, timeout_seconds: float
) -> bool:
    """True when the capture worker's event loop beat recently and no job has been running too long."""
    gauges = read_gauges(metrics_url, (HEARTBEAT_METRIC, OLDEST_JOB_METRIC), timeout_seconds)
    if gauges is None:
        return False
    now = time.time()
    heartbeat = gauges.get(HEARTBEAT_METRIC, 0.0)
    if heartbeat <= 0:
        print(f"capture {metrics_url}: no heartbeat yet", file=sys.stderr)
        return False
    if now - heartbeat > max_heartbeat_age:
        print(f"capture event loop silent for {now - heartbeat:.0f} s", file=sys.stderr)
        return False
    oldest_job = gauges.get(OLDEST_JOB_METRIC, 0.0)
    if oldest_job > 0 and now - oldest_job > max_job_age:
        print(f"capture job running for {now - oldest_job:.0f} s: a worker thread is stuck", file=sys.stderr)
        return False
    return True


def spool_drains(
    metrics_url: str, *, wait_seconds: float, poll_seconds: float, timeout_seconds: float
) -> bool:
    """True once the spool reads empty; False if it still holds requests (or is unreadable) at the deadline.

    With no time for a second reading (--wait 0, or the deadline is near) a single empty reading counts.
    """
    deadline = time.monotonic() + wait_seconds
    zero_readings = 0
    while True:
        pending = spool_pending(metrics_url, timeout_seconds)
        zero_readings = zero_readings + 1 if pending == 0 else 0
        out_of_time = time.monotonic() + poll_seconds > deadline
        if zero_readings >= _DRAINED_READINGS or (zero_readings and out_of_time):
            return True
        if out_of_time:
            shown = "unreadable" if pending is None else f"{pending:g} pending"
            print(f"spool not drained within {wait_seconds:g} s: {shown}", file=sys.stderr)
            return False
        time.sleep(poll_seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds before the probe gives up")
    modes = parser.add_subparsers(dest="mode", required=True)
    grpc_mode = modes.add_parser("grpc", help="grpc.health.v1 Check")
    grpc_mode.add_argument("address", help="host:port")
    grpc_mode.add_argument("service", nargs="?", default="", help='service name; "" is the whole server')
    http_mode = modes.add_parser("http", help="GET must answer 2xx")
    http_mode.add_argument("url")
    spool_mode = modes.add_parser("spool-drained", help=f"the edge's {SPOOL_PENDING_METRIC} must read 0")
    spool_mode.add_argument("url", help="the edge's /metrics")
    spool_mode.add_argument(
        "--wait", type=float, default=0.0, help="seconds to keep polling for an empty spool"
    )
    spool_mode.add_argument("--poll", type=float, default=1.0, help="seconds between polls")
    capture_mode = modes.add_parser("capture-alive", help="the capture worker's heartbeat and oldest job")
    capture_mode.add_argument("url", help="the capture worker's /metrics")
    # The heartbeat beats every 5 s (capture_service/worker.py).
    capture_mode.add_argument("--max-heartbeat-age", type=float, default=30.0, help="seconds")
    capture_mode.add_argument(
        "--max-job-age", type=float, default=90.0, help="seconds; well past the job time limit (30 s)"
    )
    args = parser.parse_args(argv)
    if args.mode == "grpc":
        healthy = grpc_is_serving(args.address, args.service, args.timeout)
    elif args.mode == "capture-alive":
        healthy = capture_is_alive(
            args.url,
            max_heartbeat_age=args.max_heartbeat_age,
            max_job_age=args.max_job_age,
            timeout_seconds=args.timeout,
        )
    elif args.mode == "spool-drained":
        healthy = spool_drains(
            args.url, wait_seconds=args.wait, poll_seconds=args.poll, timeout_seconds=args.timeout
        )
    else:
        healthy = http_is_ok(args.url, args.timeout)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
