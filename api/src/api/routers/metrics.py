"""`GET /metrics`: the Prometheus text format, with the read-only or the admin token.

One registry per app (never prometheus_client's global one): the fleet's
numbers, read from Redis at scrape time (`src.services.metrics_report`), and
this API process's HTTP requests (`src.api.http_metrics`).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from src.api.auth import admin_only
from src.api.http_metrics import HttpMetrics
from src.services.metrics_report import FleetCollector

router = APIRouter(tags=["metrics"], dependencies=admin_only)


def metrics_registry() -> tuple[CollectorRegistry, HttpMetrics]:
    """A registry for one app: the fleet collector, and the HTTP metrics the
    app's middleware records into."""
    registry = CollectorRegistry()
    registry.register(FleetCollector())
    return registry, HttpMetrics(registry)


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(request: Request) -> Response:
    registry: CollectorRegistry = request.app.state.metrics_registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
