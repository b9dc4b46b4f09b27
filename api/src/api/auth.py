"""Bearer tokens: who may do what under `/api` and on `/metrics`.

Two tokens. The admin token opens everything. The read-only token
(`BIFROST_READ_TOKEN`, optional) opens reads, GET and HEAD, and nothing else:
any other method with it is a 403 that says so. No token, or one that is
neither, is a 401.

`refusal` is the one decision. `ApiAuthGate` (middleware.py) applies it before
routing; each route's `require_admin` dependency applies it again, so a route
stays guarded even in an app built without the gate, and the two always agree.

`create_app` puts the tokens on `app.state.tokens`. They are compared in
constant time and never logged or echoed back (`Tokens` leaves them out of its
repr).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Annotated, Literal

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

# auto_error=False: a missing header must answer 401 with our challenge, not
# whatever FastAPI's default for this scheme is in the installed version.
_bearer = HTTPBearer(
    auto_error=False,
    description="The admin token, or the read-only token for GET (see README)",
)

UNAUTHORIZED_DETAIL = "missing or invalid bearer token"

Role = Literal["admin", "read"]
# What the read-only token may do: read, never change.
READ_METHODS = frozenset({"GET", "HEAD"})


class SameTokens(ValueError):
    """The read-only token is the admin token: refused at start, since either
    every reader would be an admin or the admin would be read-only."""


@dataclass(frozen=True)
class Tokens:
    admin: str = field(repr=False)
    read: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.read is not None and hmac.compare_digest(
            self.read.encode("utf-8"), self.admin.encode("utf-8")
        ):
            raise SameTokens(
                "BIFROST_READ_TOKEN is the admin token: the read-only token must differ "
                "from the admin token; set another one, or unset BIFROST_READ_TOKEN"
            )


def unauthorized() -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=UNAUTHORIZED_DETAIL,
        headers={"WWW-Authenticate": "Bearer"},
    )


def read_only(method: str, path: str) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_403_FORBIDDEN,
        detail=f"the read-only token cannot change anything: {method} {path} "
        "needs the admin token",
    )


def token_matches(presented: str, expected: str) -> bool:
    # Header values arrive latin-1 decoded; compare raw bytes, so a non-ASCII
    # value is simply wrong instead of a TypeError from compare_digest.
    return hmac.compare_digest(presented.encode("latin-1", "replace"), expected.encode("utf-8"))


def role_for(authorization: str | None, tokens: Tokens) -> Role | None:
    """The role an `Authorization` header's bearer token gives; None when it gives none."""
    if authorization is None:
        return None
    scheme, _, presented = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    # Both compared every time: how long the check takes never tells which
    # token a guess came close to.
    is_admin = token_matches(presented, tokens.admin)
    is_reader = tokens.read is not None and token_matches(presented, tokens.read)
    if is_admin:
        return "admin"
    return "read" if is_reader else None


def refusal(
    authorization: str | None, method: str, path: str, tokens: Tokens
) -> HTTPException | None:
    """Why this request may not go on (401: no valid token; 403: the read-only
    token on a method that is not a read); None when it may."""
    role = role_for(authorization, tokens)
    if role is None:
        return unauthorized()
    if role == "read" and method not in READ_METHODS:
        return read_only(method, path)
    return None


async def require_admin(
    request: Request,
    # Declared for the OpenAPI schema (the scheme /docs offers); the header
    # itself is read below exactly as the gate reads it.
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """FastAPI dependency: the admin token, or the read-only token on a read."""
    tokens: Tokens = request.app.state.tokens
    refused = refusal(
        request.headers.get("authorization"), request.method, request.scope["path"], tokens
    )
    if refused is not None:
        raise refused


# What every /api router lists in its `dependencies` (the name predates the
# read-only token: reads are open to it too, see `refusal`).
admin_only = [Depends(require_admin)]
