"""The read-only token: the decision (`refusal`), the gate that applies it
before routing, and each route's dependency, which applies the same decision
on its own. No Redis, no store: the paths tested are refused or never reach one.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from src.api.app import create_app
from src.api.auth import SameTokens, Tokens, admin_only, refusal, role_for
from src.foundation.settings import get_settings

from .conftest import TOKEN

READ = "unit-read-token"
TOKENS = Tokens(admin=TOKEN, read=READ)
WRITES = ("POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "PROPFIND")


def bearer(token: str) -> str:
    return f"Bearer {token}"


@pytest.mark.parametrize(
    ("authorization", "tokens", "role"),
    [
        (bearer(TOKEN), TOKENS, "admin"),
        (bearer(READ), TOKENS, "read"),
        (f"bearer {READ}", TOKENS, "read"),
        (bearer(TOKEN), Tokens(admin=TOKEN), "admin"),
        (bearer(READ), Tokens(admin=TOKEN), None),  # no read token configured
        (None, TOKENS, None),
        (bearer(READ + "x"), TOKENS, None),
        (bearer(READ[:-1] + "X"), TOKENS, None),  # same length, one byte off
        (f"Basic {READ}", TOKENS, None),
        (READ, TOKENS, None),
        ("Bearer", TOKENS, None),
        ("Bearer t\u00f6ken", TOKENS, None),
    ],
)
def test_the_role_a_header_gives(authorization: str | None, tokens: Tokens, role: str) -> None:
    assert role_for(authorization, tokens) == role


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("token", [TOKEN, READ])
def test_both_tokens_may_read(method: str, token: str) -> None:
    assert refusal(bearer(token), method, "/api/packages", TOKENS) is None


@pytest.mark.parametrize("method", WRITES)
def test_the_admin_token_may_do_anything(method: str) -> None:
    assert refusal(bearer(TOKEN), method, "/api/packages/install", TOKENS) is None


@pytest.mark.parametrize("method", WRITES)
def test_the_read_token_may_change_nothing(method: str) -> None:
    refused = refusal(bearer(READ), method, "/api/packages/install", TOKENS)
    assert refused is not None
    assert refused.status_code == 403
    assert refused.detail == (
        f"the read-only token cannot change anything: {method} /api/packages/install "
        "needs the admin token"
    )
    assert READ not in refused.detail


@pytest.mark.parametrize("authorization", [None, "Bearer nope", bearer(READ + READ)])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_no_valid_token_is_a_401_whatever_the_method(
    authorization: str | None, method: str
) -> None:
    refused = refusal(authorization, method, "/api/workers", TOKENS)
    assert refused is not None
    assert refused.status_code == 401
    assert refused.headers == {"WWW-Authenticate": "Bearer"}


def test_the_read_token_may_not_be_the_admin_token() -> None:
    with pytest.raises(SameTokens) as raised:
        Tokens(admin=TOKEN, read=TOKEN)
    assert TOKEN not in str(raised.value)
    assert "BIFROST_READ_TOKEN" in str(raised.value)


def test_tokens_stay_out_of_their_repr() -> None:
    assert TOKEN not in repr(TOKENS)
    assert READ not in repr(TOKENS)


def test_the_api_refuses_to_start_when_the_read_token_is_the_admin_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BIFROST_ADMIN_TOKEN", TOKEN)
    monkeypatch.setenv("BIFROST_READ_TOKEN", f"  {TOKEN}  ")  # the settings strip it
    get_settings.cache_clear()
    with pytest.raises(SameTokens):
        create_app()


def test_a_blank_read_token_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BIFROST_ADMIN_TOKEN", TOKEN)
    monkeypatch.setenv("BIFROST_READ_TOKEN", "   ")
    get_settings.cache_clear()
    assert create_app().state.tokens.read is None


# --- the gate, in the real app ----------------------------------------------------


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("BIFROST_ADMIN_TOKEN", TOKEN)
    monkeypatch.setenv("BIFROST_READ_TOKEN", READ)
    get_settings.cache_clear()
    with TestClient(create_app(), raise_server_exceptions=False) as test_client:
        yield test_client


def test_the_gate_lets_reads_through_before_routing(client: TestClient) -> None:
    # Past the gate, routing answers: the read token learns what the admin would.
    auth = {"Authorization": bearer(READ)}
    assert client.get("/api/nope", headers=auth).status_code == 404
    assert client.head("/api/requirements", headers=auth).status_code == 405


@pytest.mark.parametrize("path", ["/api/requirements", "/api/nope", "/api", "/metrics"])
def test_the_gate_refuses_writes_with_the_read_token_before_routing(
    client: TestClient, path: str
) -> None:
    response = client.post(path, headers={"Authorization": bearer(READ)}, content=b"{not json")
    assert response.status_code == 403
    assert response.json() == {
        "detail": f"the read-only token cannot change anything: POST {path} needs the admin token"
    }


@pytest.mark.parametrize("path", ["/metrics", "/metrics/x", "/api/events"])
def test_the_gate_guards_metrics_and_events(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    # With either token the gate lets the request on (what answers then is the route's).
    for token in (TOKEN, READ):
        if path != "/api/events":  # a stream: its own test reads one
            assert client.get(path, headers={"Authorization": bearer(token)}).status_code != 401


@pytest.mark.parametrize(
    ("path", "status"),
    # /metricsfoo: no route, not guarded. /health: 503 here (no Redis, no store),
    # the route's answer, past the gate.
    [("/health", 503), ("/", 200), ("/metricsfoo", 404)],
)
def test_what_stays_open(client: TestClient, path: str, status: int) -> None:
    assert client.get(path).status_code == status


# --- the dependency alone: the same decision without the gate ------------------------


@pytest.fixture
def ungated() -> Iterator[TestClient]:
    router = APIRouter(prefix="/api/thing", dependencies=admin_only)

    @router.get("")
    def read_thing() -> dict[str, str]:
        return {"thing": "read"}

    @router.post("")
    def change_thing() -> dict[str, str]:
        return {"thing": "changed"}

    app = FastAPI()
    app.state.tokens = TOKENS
    app.include_router(router)
    with TestClient(app) as test_client:
        yield test_client


def test_the_dependency_decides_as_the_gate_does(ungated: TestClient) -> None:
    read, admin = {"Authorization": bearer(READ)}, {"Authorization": bearer(TOKEN)}
    assert ungated.get("/api/thing", headers=read).json() == {"thing": "read"}
    assert ungated.get("/api/thing", headers=admin).status_code == 200
    assert ungated.post("/api/thing", headers=admin).json() == {"thing": "changed"}
    refused = ungated.post("/api/thing", headers=read)
    assert refused.status_code == 403
    assert refused.json()["detail"] == (
        "the read-only token cannot change anything: POST /api/thing needs the admin token"
    )
    for headers in ({}, {"Authorization": "Bearer nope"}):
        response = ungated.get("/api/thing", headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
