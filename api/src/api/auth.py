"""Bearer-token check for every `/api` route.

The expected token is put on `app.state.admin_token` by `create_app`; it is
compared in constant time and never logged or echoed back.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

# auto_error=False: a missing header must answer 401 with our challenge, not
# whatever FastAPI's default for this scheme is in the installed version.
_bearer = HTTPBearer(auto_error=False, description="The admin token (see README)")

UNAUTHORIZED_DETAIL = "missing or invalid bearer token"


def unauthorized() -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=UNAUTHORIZED_DETAIL,
        headers={"WWW-Authenticate": "Bearer"},
    )


def token_matches(presented: str, expected: str) -> bool:
    # Header values arrive latin-1 decoded; compare raw bytes, so a non-ASCII
    # value is simply wrong instead of a TypeError from compare_digest.
    return hmac.compare_digest(presented.encode("latin-1", "replace"), expected.encode("utf-8"))


async def require_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """FastAPI dependency: 401 unless `Authorization: Bearer <admin token>`."""
    expected: str = request.app.state.admin_token
    if credentials is None or not token_matches(credentials.credentials, expected):
        raise unauthorized()


# What every /api router lists in its `dependencies`.
admin_only = [Depends(require_admin)]
