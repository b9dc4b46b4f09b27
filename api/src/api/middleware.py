"""ASGI middleware that must act before routing and body parsing.

- `ApiAuthGate`: every request under `/api` without the admin token is a 401,
  including unknown paths, unknown methods and malformed bodies; a route's own
  `require_admin` dependency would only run after routing and body parsing,
  which would answer 404/405/422 to a caller without a token.
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

from src.api.auth import UNAUTHORIZED_DETAIL, token_matches
from src.api.json_body import InvalidJsonBody, parse_json_body

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
