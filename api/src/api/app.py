"""The FastAPI application: routers, exception mapping, auth, size limits and
JSON bodies read as JSON whatever their Content-Type.

Endpoints calling the (synchronous) services are plain `def`, which FastAPI
runs in its threadpool, so a slow store or Redis never blocks the event loop.
"""

from __future__ import annotations

from fastapi import FastAPI

from src.api.errors import install_exception_handlers
from src.api.middleware import DEFAULT_MAX_BODY_BYTES, ApiAuthGate, BodySizeLimit, JsonBodies
from src.api.routers import executions, files, packages, requirements, workers
from src.foundation.admin_token import load_or_create_admin_token
from src.foundation.settings import Settings, get_settings

API_ROUTERS = (
    requirements.router,
    packages.router,
    workers.router,
    files.router,
    executions.router,
)


def create_app(
    settings: Settings | None = None, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
) -> FastAPI:
    """Build the API. The admin token is read (or created) now, once."""
    settings = settings or get_settings()
    token = load_or_create_admin_token(settings)

    app = FastAPI(title="Bifrost runtime API", version="0.1.0")
    app.state.admin_token = token

    @app.get("/health", tags=["health"])
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    for router in API_ROUTERS:
        app.include_router(router)
    install_exception_handlers(app)

    # The last middleware added runs first: the token is checked before the
    # body is even read, so a caller without it learns nothing, not even 413;
    # JSON bodies are read through the size limit.
    app.add_middleware(JsonBodies)
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    app.add_middleware(ApiAuthGate, token=token)
    return app
