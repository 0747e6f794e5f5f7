"""Prometheus metrics of the gateway (`GET /metrics`), on a registry of its own per app.

Validity is scored by the one metrics module (`evals.metrics`, see fallback.py); this module only
counts. The shadow and capture series are declared here and left at zero: the shadow sampler and
the capture writer (built on the `on_answered` hook) set them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Seconds; the SLM on CPU answers in ~0.3-5 s, the gateway's own share in well under a millisecond.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1)


class GatewayMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("slm_gateway_requests", "Requests answered, by model, route and HTTP status",
                                ["model", "route", "status"], registry=r)
        self.latency = Histogram("slm_gateway_request_seconds", "Whole request latency by model and route",
                                 ["model", "route"], buckets=LATENCY_BUCKETS, registry=r)
        self.overhead = Histogram("slm_gateway_overhead_seconds", "The gateway's own time (request minus upstream waits)",
                                  ["model"], buckets=OVERHEAD_BUCKETS, registry=r)
        self.fallbacks = Counter("slm_gateway_fallbacks", "Routes passed over, by model, route and reason "
                                 "(error, timeout, invalid, unavailable, breaker_open)", ["model", "route", "reason"],
                                 registry=r)
        self.validity = Counter("slm_gateway_outputs", "Upstream outputs scored against the contract",
                                ["model", "route", "valid"], registry=r)
        self.breaker_open = Gauge("slm_gateway_breaker_open", "1 while the route's circuit breaker is open",
                                  ["model", "route"], registry=r)
        self.hook_drops = Counter("slm_gateway_hook_drops", "Answered exchanges not handed to the hooks (queue full)",
                                  registry=r)
        self.hook_errors = Counter("slm_gateway_hook_errors", "on_answered callbacks that raised", registry=r)
        # set by the shadow sampler and the capture writer
        self.shadow_queue_depth = Gauge("slm_gateway_shadow_queue_depth", "Shadow requests waiting", registry=r)
        self.shadow_dropped = Counter("slm_gateway_shadow_dropped", "Shadow requests dropped (queue full)", registry=r)
        self.capture_backlog = Gauge("slm_gateway_capture_backlog", "Exchanges waiting to be written to capture",
                                     registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
