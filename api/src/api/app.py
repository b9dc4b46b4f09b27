"""The FastAPI application: routers, exception mapping, auth, size limits and
JSON bodies read as JSON whatever their Content-Type.

Endpoints calling the (synchronous) services are plain `def`, which FastAPI
runs in its threadpool, so a slow store or Redis never blocks the event loop.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from src.api.auth import Tokens
from src.api.errors import install_exception_handlers
from src.api.http_metrics import HttpMetricsMiddleware
from src.api.middleware import DEFAULT_MAX_BODY_BYTES, ApiAuthGate, BodySizeLimit, JsonBodies
from src.api.routers import (
    alerts,
    console,
    events,
    executions,
    files,
    metrics,
    packages,
    requirements,
    workers,
)
from src.foundation.admin_token import load_or_create_admin_token
from src.foundation.settings import Settings, get_settings
from src.services import alert_delivery
from src.services import health as health_checks

# Every router here needs a token (its `admin_only` dependency, and the gate).
API_ROUTERS = (
    requirements.router,
    packages.router,
    workers.router,
    files.router,
    executions.router,
    events.router,
    alerts.router,
    metrics.router,
)


def create_app(
    settings: Settings | None = None, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
) -> FastAPI:
    """Build the API. The admin token is read (or created) now, once.

    Raises `SameTokens` when BIFROST_READ_TOKEN is the admin token: the API
    refuses to start rather than guess which of the two the operator meant.
    """
    settings = settings or get_settings()
    token = load_or_create_admin_token(settings)
    tokens = Tokens(admin=token, read=settings.read_token)

    # The lifespan runs the thread that sends install-failure alerts to the webhook.
    # No /docs or /redoc: their pages load scripts from a CDN. The schema,
    # /openapi.json, needs a token (src/api/middleware.py).
    app = FastAPI(title="Bifrost runtime API", version="0.1.0", docs_url=None, redoc_url=None,
                  lifespan=alert_delivery.lifespan())
    app.state.admin_token = token
    app.state.tokens = tokens  # what `require_admin` checks (src/api/auth.py)
    app.state.event_streams = {}  # open GET /api/events streams per role (routers/events.py)
    # GET /metrics: the fleet's numbers and this process's HTTP requests (routers/metrics.py).
    app.state.metrics_registry, http_metrics = metrics.metrics_registry()

    @app.get("/health", tags=["health"],
             responses={503: {"description": "Redis or the store is down (named in detail)"}})
    def health() -> Any:
        down = health_checks.parts_down()
        if down:
            detail = "; ".join(f"{part} unavailable" for part in down)
            return JSONResponse({"status": "unavailable", "detail": detail}, 503)
        return {"status": "ok"}

    for router in API_ROUTERS:
        app.include_router(router)
    app.include_router(console.router)  # the page itself holds no secret: no token to load it
    install_exception_handlers(app)

    # The last middleware added runs first: the token is checked before the
    # body is even read, so a caller without it learns nothing, not even 413;
    # JSON bodies are read through the size limit.
    app.add_middleware(JsonBodies)
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    app.add_middleware(ApiAuthGate, tokens=tokens)
    # Outermost: every answer is counted, the gate's 401s and 403s included.
    app.add_middleware(HttpMetricsMiddleware, metrics=http_metrics)
    return app
