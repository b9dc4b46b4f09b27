"""ASGI middleware that must act before routing and body parsing.

- `ApiAuthGate`: every request under `/api` and to `/metrics` without a valid
  token is a 401, and one with the read-only token on a method that is not a
  read is a 403 (`src.api.auth.refusal`), including unknown paths, unknown
  methods and malformed bodies; a route's own `require_admin` dependency would
  only run after routing and body parsing, which would answer 404/405/422 to a
  caller without a token.
- `BodySizeLimit`: refuses bodies over a cap with 413, by `Content-Length`
  up front and by counting for chunked bodies.
- `JsonBodies`: a route that takes a JSON body reads it as JSON whatever
  Content-Type the client sent (none, `curl -d`'s form type, `text/plain`),
  and only JSON that can be stored and sent on reaches it (`json_body`);
  anything else is refused with a 422 naming the problem.
"""

from __future__ import annotations

from fastapi import HTTPException
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from src.api.auth import Tokens, refusal
from src.api.json_body import InvalidJsonBody, parse_json_body

API_PREFIX = "/api"
# Paths that need a token: everything under these (the console and /health
# stay open). The schema names every route and field: a token reads it.
GUARDED_PREFIXES = (API_PREFIX, "/metrics", "/openapi.json")
DEFAULT_MAX_BODY_BYTES = 2 * 1024 * 1024


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value
    return None


def is_guarded(path: str) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in GUARDED_PREFIXES)


class ApiAuthGate:
    def __init__(self, app: ASGIApp, tokens: Tokens) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and is_guarded(scope.get("path", "")):
            raw = _header(scope, b"authorization")
            authorization = None if raw is None else raw.decode("latin-1")
            refused = refusal(authorization, scope["method"], scope["path"], self.tokens)
            if refused is not None:
                response = JSONResponse(
                    {"detail": refused.detail},
                    status_code=refused.status_code,
                    headers=refused.headers,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


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


# Where `JsonBodies` leaves the reason a body is not acceptable JSON, for the
# request-validation handler to give when a route that takes JSON refuses it.
INVALID_JSON_BODY_KEY = "bifrost.invalid_json_body"


def invalid_json_body_reason(scope: Scope) -> str | None:
    """Why this request's body is not acceptable JSON; None when it is (or is empty)."""
    reason = scope.get(INVALID_JSON_BODY_KEY)
    return reason if isinstance(reason, str) else None


class JsonBodies:
    """Bodies are JSON whatever Content-Type the client sent.

    The body is read here, once, and judged by `parse_json_body`. Acceptable
    JSON goes on labelled `application/json`, so a route that takes a JSON
    body parses it even when the client sent no type, curl's form type or
    `text/plain`. Anything else goes on labelled `application/octet-stream`,
    so no route parses it as JSON (the framework's own parser would accept
    NaN, 1e999 and lone surrogates), with the reason recorded in the scope:
    a route that takes JSON then refuses the bytes, and the request-validation
    handler answers with that reason. Routes that read the raw body (PUT
    /api/files/{path}) get the same bytes and ignore the label.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            body = await _read_body(receive)
        except StarletteHTTPException as exc:  # BodySizeLimit's 413 while counting
            await JSONResponse(
                {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
            )(scope, receive, send)
            return
        if body is None:  # the client went away before sending all of it
            return
        if not body:
            await self.app(scope, _replay(body, receive), send)
            return
        scope = dict(scope)
        try:
            parse_json_body(body)
            content_type = b"application/json"
        except InvalidJsonBody as exc:
            scope[INVALID_JSON_BODY_KEY] = str(exc)
            content_type = b"application/octet-stream"
        headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-type"]
        headers.append((b"content-type", content_type))
        scope["headers"] = headers
        await self.app(scope, _replay(body, receive), send)


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body; None when the client disconnected first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive channel that yields `body` once, then the client's own
    messages (a disconnect, when it comes)."""
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
