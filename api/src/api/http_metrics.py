"""HTTP requests this API process answered, for `GET /metrics`.

Counted per API process, in the app's own registry (never prometheus_client's
global one): Prometheus scrapes each API host. A request is counted under its
route's template (`/api/executions/{execution_id}`), never its raw path, so
the number of series stays bounded whatever clients send: a path no route
matches is `route="unmatched"`, a method outside HTTP's usual ones
`method="other"`.

`HttpMetricsMiddleware` is plain ASGI (not `BaseHTTPMiddleware`): it only
watches the response's start for its status and passes every message on as
it comes, so server-sent events keep streaming. It is the outermost of the
app's middleware, so it sees every answer, the auth gate's 401s included;
a request that ends in an unhandled error counts as 500.
"""

from __future__ import annotations

import re
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED = "unmatched"
OTHER_METHOD = "other"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class HttpMetrics:
    """The request counter and the duration histogram, in `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "bifrost_http_requests",
            "HTTP requests this API process answered, by method, route template and status code.",
            ("method", "route", "status"), registry=registry,
        )
        self.duration = Histogram(
            "bifrost_http_request_duration_seconds",
            "How long this API process took to answer HTTP requests, by method and route "
            "template, in seconds (a server-sent event stream: as long as it stayed open).",
            ("method", "route"), registry=registry, buckets=DURATION_BUCKETS,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.duration.labels(method, route).observe(seconds)


def method_label(scope: Scope) -> str:
    method = str(scope.get("method", ""))
    return method if method in KNOWN_METHODS else OTHER_METHOD


class RouteTemplates:
    """The app's route templates, compiled once, to name the route a request
    goes to, whether or not it got that far (the auth gate answers before routing)."""

    def __init__(self, routes: list[Any]) -> None:
        self._routes: list[tuple[re.Pattern[str], frozenset[str], str]] = []
        for route in routes:
            path = getattr(route, "path", None)
            if isinstance(path, str):
                regex, _format, _convertors = compile_path(path)
                self._routes.append((regex, frozenset(getattr(route, "methods", None) or ()),
                                     path))

    @classmethod
    def of(cls, app: Any) -> RouteTemplates:
        routes = list(getattr(app, "routes", []))
        try:  # FastAPI resolves included routers lazily: list their routes one by one
            from fastapi.routing import iter_route_contexts  # type: ignore[attr-defined]
        except ImportError:  # a FastAPI whose app lists every route itself
            return cls(routes)
        return cls(list(iter_route_contexts(routes)))

    def template(self, method: str, path: str) -> str:
        """The template of the route for `method` on `path` (a route that has
        the path but not the method counts too: it answers 405); else `unmatched`."""
        partial: str | None = None
        for regex, methods, template in self._routes:
            if regex.match(path):
                if not methods or method in methods:
                    return template
                partial = partial or template
        return partial or UNMATCHED


class HttpMetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self._templates: RouteTemplates | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless the app starts a response

        async def send_watching(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_watching)
        finally:
            if self._templates is None:  # the first request: every route is in place
                self._templates = RouteTemplates.of(scope.get("app"))
            path = str(scope.get("path", ""))
            route = self._templates.template(str(scope.get("method", "")),
                                             path.removeprefix(scope.get("root_path", "")))
            self.metrics.observe(method_label(scope), route, status,
                                 time.perf_counter() - started)
