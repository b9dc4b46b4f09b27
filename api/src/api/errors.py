"""Domain exceptions -> HTTP answers, in one place.

Answers carry the reason and never a traceback; the token never appears in
any of them (no handler echoes request headers).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from src.api.middleware import invalid_json_body_reason
from src.core.requirements_cache import read_store_requirements
from src.foundation.requirements import InvalidRequirements
from src.foundation.workspace_paths import InvalidPath
from src.services.installer.platform import PlatformConflict
from src.services.installer.resolver import IndexUnreachable, Unresolvable
from src.services.packages import RequirementsBusy
from src.store.database import StoreUnavailable
from src.store.files import RequirementsConflict

logger = logging.getLogger(__name__)

# Path problems are validation failures of the request, like bad requirement
# lines: 422 for both, so a client has one status to handle.
INVALID_PATH_STATUS = 422
# What a 503 asks the client to wait before trying again.
RETRY_AFTER_SECONDS = 5


def invalid_requirements_body(exc: InvalidRequirements) -> dict[str, object]:
    return {
        "detail": {
            "message": f"invalid requirements: {exc}",
            "errors": [
                {"line": error.line_number, "text": error.line, "reason": error.reason}
                for error in exc.errors
            ],
        }
    }


async def _invalid_requirements(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidRequirements)
    return JSONResponse(invalid_requirements_body(exc), status_code=422)


async def _invalid_path(_request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": f"invalid path: {exc}"}, status_code=INVALID_PATH_STATUS)


async def _conflict(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequirementsConflict)
    detail: dict[str, object] = {"message": str(exc), "current_hash": exc.current_hash}
    # The other side's text, so a client can show what it is in conflict with.
    try:
        current = await asyncio.to_thread(read_store_requirements)
    except Exception:  # the store went away since: the hash alone then
        current = None
    if current is not None and current["hash"] == exc.current_hash:
        detail["current_content"] = current["content"]
    return JSONResponse({"detail": detail}, status_code=409)


async def _platform_conflict(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PlatformConflict)
    return JSONResponse(
        {"detail": {"message": f"platform conflict: {exc}", "conflicts": exc.reasons}},
        status_code=409,
    )


async def _unresolvable(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Unresolvable)
    what = f" ({exc.package})" if exc.package else ""
    return JSONResponse(
        {"detail": {"message": f"the requirements cannot be resolved{what}: {exc.reason}",
                    "package": exc.package, "reason": exc.reason}},
        status_code=422,
    )


async def _index_unreachable(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, IndexUnreachable)
    logger.warning("Package index unreachable (%s): %s", exc.index, exc.reason)
    return JSONResponse(
        {"detail": {"message": f"the package index {exc.index} cannot be reached; nothing "
                               "was changed", "index": exc.index, "reason": exc.reason}},
        status_code=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def _busy(_request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=503,
                        headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


async def _store_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    logger.error("Store unavailable: %s", exc)
    message = str(exc)
    # StoreUnavailable's own message already starts with "store unavailable".
    detail = message if message.startswith("store unavailable") else f"store unavailable: {message}"
    return JSONResponse({"detail": detail}, status_code=503)


async def _redis_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    logger.error("Redis unavailable: %s", exc)
    return JSONResponse({"detail": f"redis unavailable: {exc}"}, status_code=503)


def unparsable_body_reason(exc: StarletteHTTPException) -> str | None:
    """What is wrong with a JSON body FastAPI could not parse, when known.

    FastAPI answers 400 "There was an error parsing the body" for every
    failure other than a JSON syntax error, chaining the real one: bytes that
    are not UTF-8, and JSON nested deeper than the parser recurses.
    """
    cause = exc.__cause__
    if exc.status_code != 400:
        return None
    if isinstance(cause, UnicodeDecodeError):
        return f"request body is not valid UTF-8 (byte {cause.start}: {cause.reason})"
    if isinstance(cause, RecursionError):
        return "request body JSON is nested too deeply"
    return None


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    reason = unparsable_body_reason(exc)
    if reason is not None:
        # A body that cannot be read as JSON is a validation failure, like
        # malformed JSON (FastAPI's own 422 "JSON decode error").
        return JSONResponse({"detail": reason}, status_code=422)
    return await http_exception_handler(request, exc)


def _without_input(error: Mapping[str, Any]) -> dict[str, Any]:
    """A validation error's type, location and message, none of the client's values."""
    return {
        "type": str(error.get("type", "")),
        "loc": [str(step) for step in error.get("loc", ())],
        "msg": str(error.get("msg", "")),
    }


def validation_error_response(errors: Sequence[Any]) -> JSONResponse:
    """FastAPI's 422 answer, except that it never fails to render.

    Each error echoes the offending `input`; a value that cannot be put in a
    JSON answer (bytes that are not UTF-8, a lone surrogate, NaN, a value too
    deep to encode) would turn the 422 into a 500. Then the errors are sent
    without the echoed values: the type, location and message still say what
    is wrong.
    """
    try:
        return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)
    except (ValueError, TypeError, RecursionError):
        pass
    bare = [_without_input(error) for error in errors if isinstance(error, Mapping)]
    try:
        return JSONResponse({"detail": bare}, status_code=422)
    except ValueError:  # a message or location that still holds a lone surrogate
        return JSONResponse({"detail": "request validation failed"}, status_code=422)


def _about_the_body(error: Any) -> bool:
    if not isinstance(error, Mapping):
        return False
    location = error.get("loc", ())
    return bool(location) and location[0] == "body"


async def _request_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    reason = invalid_json_body_reason(request.scope)
    if reason is not None and any(_about_the_body(error) for error in errors):
        # The route takes JSON and the body is not acceptable JSON: that is
        # the problem to report, not how its bytes failed the body's model.
        return JSONResponse({"detail": reason}, status_code=422)
    return validation_error_response(errors)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    """A 500 with a reason, and the traceback in the API's log under this
    module's name (uvicorn also logs it, to its own handler)."""
    logger.error("%s %s failed: %s", request.method, request.url.path, exc, exc_info=exc)
    return JSONResponse(
        status_code=500,
        content={"detail": f"internal error ({type(exc).__name__}): the API's log has the "
                           "traceback"},
    )


def install_exception_handlers(app: FastAPI) -> None:
    # Whatever no handler below maps: logged here, answered with a reason.
    app.add_exception_handler(Exception, _unexpected)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(InvalidRequirements, _invalid_requirements)
    app.add_exception_handler(InvalidPath, _invalid_path)
    app.add_exception_handler(RequirementsConflict, _conflict)
    app.add_exception_handler(PlatformConflict, _platform_conflict)
    app.add_exception_handler(Unresolvable, _unresolvable)
    app.add_exception_handler(IndexUnreachable, _index_unreachable)
    app.add_exception_handler(RequirementsBusy, _busy)
    app.add_exception_handler(StoreUnavailable, _store_unavailable)
    app.add_exception_handler(redis.RedisError, _redis_unavailable)
