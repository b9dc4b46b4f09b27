"""ASGI middleware that must act before routing and body parsing.

- `ApiAuthGate`: every request under `/api` without the admin token is a 401,
  including unknown paths, unknown methods and malformed bodies; a route's own
  `require_admin` dependency would only run after routing and body parsing,
  which would answer 404/405/422 to a caller without a token.
- `BodySizeLimit`: refuses bodies over a cap with 413, by `Content-Length`
  up front and by counting for chunked bodies.
"""

from __future__ import annotations

from fastapi import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from src.api.auth import UNAUTHORIZED_DETAIL, token_matches

API_PREFIX = "/api"
DEFAULT_MAX_BODY_BYTES = 2 * 1024 * 1024


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value
    return None


class ApiAuthGate:
    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        guarded = path == API_PREFIX or path.startswith(API_PREFIX + "/")
        if scope["type"] == "http" and guarded and not self._authorized(scope):
            response = JSONResponse(
                {"detail": UNAUTHORIZED_DETAIL},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        raw = _header(scope, b"authorization")
        if raw is None:
            return False
        scheme, _, credentials = raw.decode("latin-1").partition(" ")
        return scheme.lower() == "bearer" and token_matches(credentials, self.token)


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> HTTPException:
        return HTTPException(413, f"request body is larger than {self.max_bytes} bytes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            status = 413 if declared.isdigit() else 400
            detail = self._too_large().detail if status == 413 else "invalid Content-Length"
            await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Raised inside the endpoint's body read, so the app's
                    # HTTPException handling turns it into the 413 answer.
                    raise self._too_large()
            return message

        await self.app(scope, limited_receive, send)
