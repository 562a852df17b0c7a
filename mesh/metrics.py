"""Prometheus metrics shared by every service, and the metrics HTTP endpoint for gRPC processes."""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

GRPC_HANDLED = Counter(
    "alerts_grpc_server_handled_total", "gRPC calls completed, by method and status code", ["method", "code"]
)
GRPC_LATENCY = Histogram(
    "alerts_grpc_server_latency_seconds", "gRPC call latency by method", ["method"], buckets=LATENCY_BUCKETS
)
GRPC_IN_FLIGHT = Gauge("alerts_grpc_server_in_flight", "gRPC calls being served")


def start_metrics_server(port: int | None) -> None:
    if port is None:
        return
    start_http_server(port)
    log.info("metrics endpoint listening", extra={"port": port})
