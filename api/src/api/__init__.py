"""The HTTP API (FastAPI): `create_app()` builds it, `serve()` runs it with uvicorn."""

from src.api.app import create_app

__all__ = ["create_app"]
