"""Running the API with uvicorn (called by `bifrost api` / `bifrost up`)."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from src.api.app import create_app
from src.api.head_timeout import DEFAULT_HEAD_TIMEOUT_SECONDS, head_timeout_protocol
from src.foundation.settings import get_settings

DEFAULT_HOST = "127.0.0.1"


def make_server(
    app: FastAPI,
    host: str = DEFAULT_HOST,
    port: int = 0,
    *,
    head_timeout: float = DEFAULT_HEAD_TIMEOUT_SECONDS,
) -> uvicorn.Server:
    """A uvicorn server for `app`; `server.run()` serves, `server.should_exit = True` stops.

    A client gets `head_timeout` seconds to send a request's line and headers
    (see `head_timeout`); the body's size is bounded by the app itself.
    uvicorn's access log prints the request line and status, never headers,
    so the bearer token does not reach the logs.
    """
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=head_timeout_protocol(head_timeout),
        # The API has no WebSocket routes: an upgrade request is plain HTTP.
        ws="none",
        log_level="info",
        access_log=True,
        server_header=False,
    )
    return uvicorn.Server(config)


def serve(host: str | None = None, port: int | None = None) -> None:
    """Serve the API in the foreground until SIGINT/SIGTERM (uvicorn's own
    handlers); host and port default to BIFROST_HOST / BIFROST_PORT."""
    settings = get_settings()
    make_server(
        create_app(settings),
        settings.host if host is None else host,
        settings.port if port is None else port,
        head_timeout=settings.head_timeout,
    ).run()
