"""`GET /metrics` on the real HTTP server: the token it needs, the Prometheus
text format, the fleet's numbers from Redis, and this process's HTTP requests
counted by route template."""

from __future__ import annotations

import http.client
import urllib.parse
from collections.abc import Iterator

import httpx
import pytest
import redis
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from src.core import metrics_store
from src.foundation.settings import get_settings
from tests.support.waiting import wait_for

from .conftest import Api, serving

READ_TOKEN = "integration-read-token-9876543210"
FLEET_FAMILIES = {
    "bifrost_executions", "bifrost_execution_duration_seconds",
    "bifrost_environment_builds", "bifrost_environment_build_duration_seconds",
    "bifrost_package_install_failures", "bifrost_environment_reuses",
    "bifrost_store_fallbacks", "bifrost_execution_stream_length",
    "bifrost_execution_stream_pending", "bifrost_workers", "bifrost_metrics_redis_up",
}
HTTP_FAMILIES = {"bifrost_http_requests", "bifrost_http_request_duration_seconds"}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def api(sqlite_system: str, admin_token: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    monkeypatch.setenv("BIFROST_READ_TOKEN", READ_TOKEN)
    get_settings.cache_clear()
    with serving(admin_token) as api:
        yield api


def scrape(api: Api) -> Samples:
    response = api.client.get("/metrics")
    assert response.status_code == 200, response.text
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples}


def requests_counted(samples: Samples, method: str, route: str, status: int) -> float:
    key = ("bifrost_http_requests_total",
           frozenset({"method": method, "route": route, "status": str(status)}.items()))
    return samples.get(key, 0.0)


def test_metrics_needs_the_read_or_the_admin_token(api: Api) -> None:
    assert api.anonymous.get("/metrics").status_code == 401
    wrong = api.anonymous.get("/metrics", headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 401
    read = api.anonymous.get("/metrics", headers={"Authorization": f"Bearer {READ_TOKEN}"})
    assert read.status_code == 200
    admin = api.client.get("/metrics")
    assert admin.status_code == 200
    assert admin.headers["content-type"] == CONTENT_TYPE_LATEST


def test_every_metric_is_documented(api: Api, redis_client: redis.Redis) -> None:
    response = api.client.get("/metrics")
    families = {family.name: family for family in text_string_to_metric_families(response.text)}
    assert set(families) >= FLEET_FAMILIES | HTTP_FAMILIES
    for name in FLEET_FAMILIES | HTTP_FAMILIES:
        assert families[name].documentation, name
        assert f"# HELP {name}" in response.text


def test_the_fleets_numbers_come_from_redis(api: Api, redis_client: redis.Redis) -> None:
    metrics_store.incr(metrics_store.EXECUTIONS, {"status": "Success"}, by=5,
                       client=redis_client)
    metrics_store.observe(metrics_store.EXECUTION_DURATION, None, 0.2, client=redis_client)

    samples = scrape(api)
    assert samples[("bifrost_executions_total", frozenset({("status", "Success")}))] == 5
    assert samples[("bifrost_execution_duration_seconds_count", frozenset())] == 1
    assert samples[("bifrost_metrics_redis_up", frozenset())] == 1


def test_requests_are_counted_by_route_template_never_the_raw_path(
    api: Api, redis_client: redis.Redis
) -> None:
    assert api.client.get("/api/executions/abc123").status_code == 404
    assert api.client.get("/api/executions/def456").status_code == 404
    assert api.anonymous.get("/api/workers").status_code == 401  # the gate's answer
    assert api.client.get("/no/such/path").status_code == 404
    assert api.client.delete("/health").status_code == 405
    assert _raw_request(api, "PROPFIND", "/health") == 405

    samples = scrape(api)
    assert requests_counted(samples, "GET", "/api/executions/{execution_id}", 404) == 2
    assert requests_counted(samples, "GET", "/api/workers", 401) == 1
    assert requests_counted(samples, "GET", "unmatched", 404) == 1
    assert requests_counted(samples, "DELETE", "/health", 405) == 1
    assert requests_counted(samples, "other", "/health", 405) == 1
    routes = {dict(labels).get("route") for (_name, labels) in samples}
    assert not {"/api/executions/abc123", "/no/such/path"} & routes
    duration = ("bifrost_http_request_duration_seconds_count",
                frozenset({("method", "GET"), ("route", "/api/executions/{execution_id}")}))
    assert samples[duration] == 2


def test_event_streams_keep_streaming_and_are_counted_when_they_end(
    api: Api, redis_client: redis.Redis
) -> None:
    with (httpx.Client(base_url=api.base_url, headers=api.auth,
                       timeout=httpx.Timeout(60, read=60)) as client,
          client.stream("GET", "/api/events") as response):
        assert response.status_code == 200
        lines = response.iter_lines()
        # The first event arrives while the stream stays open: nothing held it back.
        assert next(line for line in lines if line.startswith("event:")) == "event: progress"
        assert requests_counted(scrape(api), "GET", "/api/events", 200) == 0
    wait_for(lambda: requests_counted(scrape(api), "GET", "/api/events", 200) == 1, 60,
             what="the closed event stream to be counted")


def test_without_redis_metrics_still_answers(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    get_settings.cache_clear()
    samples = scrape(api)
    assert samples[("bifrost_metrics_redis_up", frozenset())] == 0
    assert requests_counted(samples, "GET", "/metrics", 200) == 0  # this one ends after


def _raw_request(api: Api, method: str, path: str) -> int:
    url = urllib.parse.urlsplit(api.base_url)
    connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=30)
    try:
        connection.request(method, path)
        return connection.getresponse().status
    finally:
        connection.close()
