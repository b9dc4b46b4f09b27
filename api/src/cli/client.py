"""The CLI's HTTP client: where the API is, which token to send, and every
way a request can go wrong turned into one readable line.

The remote commands (`bifrost packages ...`, `run`, `workers`) import httpx,
rich and `src.foundation` only: never the web stack or `src.api`, so they
start fast and run on a machine with nothing but the CLI.

Exit codes: 2 when the API cannot be reached or refuses the token (the
request never got to do anything), 1 when the API answered with an error.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

URL_VARIABLE = "BIFROST_URL"
TOKEN_VARIABLE = "BIFROST_ADMIN_TOKEN"
# Reads answer at once; writes resolve the whole requirements set first,
# which may take the resolver a while on a slow index.
READ_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
WRITE_TIMEOUT = httpx.Timeout(300.0, connect=10.0)
# How long a wait tolerates an API that stopped answering (`bifrost up`
# restarts a dead API within seconds; the change is stored meanwhile).
OUTAGE_GRACE = 20.0


class CliError(Exception):
    """A failure the CLI reports as one line on stderr, then exits with `exit_code`."""

    exit_code = 1


class Unreachable(CliError):
    """No answer from the API: connection refused, unknown host, timeout."""

    exit_code = 2


class TokenProblem(CliError):
    """No token to send, or the API refused the one sent (401/403)."""

    exit_code = 2


class ApiError(CliError):
    """The API answered 4xx/5xx (other than 401/403): its reason, readably."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"the API answered {status}: {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Credentials:
    token: str
    source: str  # where it came from (the variable, the file), for a refusal's message


def api_url(explicit: str | None, environ: Mapping[str, str] | None = None) -> str:
    """--url, else BIFROST_URL, else the local API on the configured port."""
    environ = os.environ if environ is None else environ
    url = (explicit or environ.get(URL_VARIABLE) or "").strip()
    if not url:
        from src.foundation.settings import get_settings

        url = f"http://127.0.0.1:{get_settings().port}"
    if "://" not in url:
        url = "http://" + url
    return url.rstrip("/")


def admin_credentials(environ: Mapping[str, str] | None = None) -> Credentials:
    """BIFROST_ADMIN_TOKEN, else the token file in the data dir (read only:
    the CLI never creates it; that is `bifrost up`'s job)."""
    environ = os.environ if environ is None else environ
    token = (environ.get(TOKEN_VARIABLE) or "").strip()
    if token:
        return Credentials(token, TOKEN_VARIABLE)
    from src.foundation.admin_token import admin_token_path

    path = admin_token_path()
    return Credentials(_read_token_file(path), str(path))


def _read_token_file(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise TokenProblem(
            f"no admin token: set {TOKEN_VARIABLE} (no token file at {path}; "
            "BIFROST_DATA_DIR names the data dir `bifrost up` uses)"
        ) from None
    except OSError as exc:
        raise TokenProblem(
            f"cannot read the token file {path} ({_os_reason(exc)}): set {TOKEN_VARIABLE}"
        ) from None
    if not token:
        raise TokenProblem(f"the token file {path} is empty: set {TOKEN_VARIABLE}")
    return token


class ApiClient:
    """JSON requests to the API with the admin token; answers as parsed JSON."""

    def __init__(self, url: str, credentials: Credentials,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url = url
        self.credentials = credentials
        self._http = httpx.Client(
            base_url=url, transport=transport, timeout=READ_TIMEOUT,
            headers={"Authorization": f"Bearer {credentials.token}",
                     "User-Agent": "bifrost-cli"},
        )

    def close(self) -> None:
        self._http.close()

    def get(self, path: str, params: dict[str, str] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("POST", path, body=body, timeout=WRITE_TIMEOUT)

    def put(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("PUT", path, body=body, timeout=WRITE_TIMEOUT)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path, timeout=WRITE_TIMEOUT)

    def request(self, method: str, path: str, *, body: dict[str, Any] | None = None,
                params: dict[str, str] | None = None,
                timeout: httpx.Timeout = READ_TIMEOUT) -> Any:
        try:
            response = self._http.request(method, path, json=body, params=params,
                                          timeout=timeout)
        except httpx.TimeoutException:
            raise Unreachable(
                f"the API at {self.url} did not answer {method} {path} within "
                f"{timeout.read:g} s; is it overloaded? set {URL_VARIABLE}"
            ) from None
        except httpx.TransportError as exc:
            raise Unreachable(
                f"cannot reach the API at {self.url} ({transport_reason(exc)}); "
                f"is it running? set {URL_VARIABLE}"
            ) from None
        except httpx.InvalidURL as exc:
            raise Unreachable(f"invalid API URL {self.url!r} ({exc}): set {URL_VARIABLE}") from None
        return self._answer(response)

    def _answer(self, response: httpx.Response) -> Any:
        payload = _json_or_none(response)
        if response.status_code in (401, 403):
            raise TokenProblem(self._refused(response.status_code, payload))
        if response.status_code >= 400:
            message = describe_error_payload(payload) or _short_text(response)
            raise ApiError(response.status_code, message)
        if payload is None and response.content:
            raise ApiError(response.status_code,
                           f"the answer is not JSON: {_short_text(response)}")
        return payload

    def _refused(self, status: int, payload: Any) -> str:
        reason = describe_error_payload(payload)
        said = f": {reason}" if reason else ""
        return (f"the API refused the token ({status}{said}; the token came from "
                f"{self.credentials.source}): set {TOKEN_VARIABLE} to the admin token "
                "`bifrost up` printed")


class PatientReader:
    """GETs for a wait: while the API does not answer (a restart), `get`
    gives None and the wait goes on; after `grace` seconds of that, the
    Unreachable error is raised after all."""

    def __init__(self, client: ApiClient, grace: float = OUTAGE_GRACE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.grace = grace
        self.clock = clock
        self.down_since: float | None = None

    def get(self, path: str, params: dict[str, str] | None = None) -> Any:
        try:
            answer = self.client.get(path, params=params)
        except Unreachable:
            now = self.clock()
            if self.down_since is None:
                self.down_since = now
            if now - self.down_since >= self.grace:
                raise
            return None
        self.down_since = None
        return answer


def describe_error_payload(payload: Any) -> str:
    """The `detail` of an error answer as text: a string as is; `{"message",
    "errors"?}` as the message plus one line per bad requirement line; a list
    of validation errors as `field: reason` lines."""
    detail = payload.get("detail") if isinstance(payload, dict) else payload
    if detail is None:
        return ""
    if isinstance(detail, str):
        return detail
    if isinstance(detail, dict):
        message = str(detail.get("message") or json.dumps(detail))
        errors = detail.get("errors")
        lines = [_requirement_error(e) for e in errors] if isinstance(errors, list) else []
        return "\n".join([message, *lines])
    if isinstance(detail, list):
        return "\n".join(_validation_error(item) for item in detail)
    return json.dumps(detail)


def _requirement_error(error: Any) -> str:
    if not isinstance(error, dict):
        return f"  {error}"
    return f"  line {error.get('line')}: {error.get('text')!r}: {error.get('reason')}"


def _validation_error(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    location = [str(part) for part in item.get("loc") or [] if part != "body"]
    where = ".".join(location)
    return f"{where}: {item.get('msg')}" if where else str(item.get("msg"))


def transport_reason(exc: Exception) -> str:
    """'connection refused', 'name or service not known': the OS's words for
    why a connection failed, without the errno decoration."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.strerror:
            return _os_reason(cause)
        cause = cause.__cause__ or cause.__context__
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", str(exc)).strip()
    return (text[:1].lower() + text[1:]) if text else type(exc).__name__


def _os_reason(exc: OSError) -> str:
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:  # not JSON (a proxy's HTML page, an empty body)
        return None


def _short_text(response: httpx.Response, limit: int = 300) -> str:
    text = response.text.strip() or response.reason_phrase
    return text if len(text) <= limit else text[:limit] + "..."
