"""``GET /metrics`` in the Prometheus text format.

Per model and version: requests by protocol and status, latency histograms, rows predicted; the
current traffic weight of each served version; the prediction log's backlog. Each app has its own
registry (no process-global state), so several apps can live in one process.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.responses import Response

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from closedloop.server.context import ServerContext

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def protocol_of(path: str) -> str:
    if path.startswith("/v2"):
        return "oip"
    if path.endswith("/invocations"):
        return "mlflow"
    return "other"


class _StateCollector(Collector):
    """Gauges read at scrape time: traffic weights and the prediction-log backlog."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[GaugeMetricFamily]:
        weights = GaugeMetricFamily(
            "closedloop_traffic_weight",
            "Share of a model's traffic a version receives.",
            labels=["model", "version"],
        )
        for name in self.ctx.host.names():
            try:
                shares = self.ctx.host.weights(name)
            except Exception:  # a model unloaded between names() and weights()
                continue
            for version, share in shares.items():
                weights.add_metric([name, str(version)], share)
        yield weights
        if self.ctx.mirror is not None:
            for what, value in self.ctx.mirror.stats.items():
                family = GaugeMetricFamily(
                    f"closedloop_shadow_{what}", f"Shadow copies {what} since start."
                )
                family.add_metric([], float(value))
                yield family
        stats = getattr(self.ctx.sink, "stats", None)
        if isinstance(stats, dict):
            backlog = GaugeMetricFamily(
                "closedloop_prediction_log_pending_rows",
                "Predictions accepted but not yet written to the prediction log.",
            )
            backlog.add_metric([], float(stats.get("pending", 0)))
            yield backlog
            failed = GaugeMetricFamily(
                "closedloop_prediction_log_failed_flushes",
                "Prediction-log writes that failed and will be retried.",
            )
            failed.add_metric([], float(stats.get("failed_flushes", 0)))
            yield failed


class ServerMetrics:
    """The app's Prometheus registry and its request instruments."""

    def __init__(self, ctx: ServerContext) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["model", "version", "protocol"]
        self.requests = Counter(
            "closedloop_requests",
            "Requests answered, by status code.",
            [*labels, "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "closedloop_request_errors",
            "Requests answered with a 4xx or 5xx status.",
            [*labels, "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "closedloop_request_latency_seconds",
            "Time from request to response.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_StateCollector(ctx))

    def observe(self, state: dict[str, Any], path: str, status: int, seconds: float) -> None:
        model = str(state.get("model_name", ""))
        version = str(state.get("model_version", ""))
        protocol = protocol_of(path)
        if protocol == "other" and not model:
            return  # health checks and metadata scrapes are not traffic
        self.requests.labels(model, version, protocol, str(status)).inc()
        if status >= 400:
            self.errors.labels(model, version, protocol, str(status)).inc()
        self.latency.labels(model, version, protocol).observe(seconds)

    def router(self) -> APIRouter:
        api = APIRouter(tags=["metrics"])

        @api.get("/metrics", include_in_schema=False)
        async def metrics() -> Response:
            return Response(generate_latest(self.registry), media_type=CONTENT_TYPE)

        return api


class MetricsMiddleware:
    """Times every HTTP request and records it once the response has started."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/metrics":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def timed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, timed)
        finally:
            state = scope.get("state", {})
            self.metrics.observe(state, scope["path"], status, time.perf_counter() - start)
