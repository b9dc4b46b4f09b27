"""The web console: `GET /` (the page) and `GET /console/{file}` (its scripts
and styles), served from `src/api/console/`.

No token is needed: the page holds no secret. The user signs in inside the
page and the scripts send the token with every `/api` call themselves.

Only the files found in that folder when this module is imported can be
served (an allow-list of names), so no request path, however it is encoded,
reaches any other file. Every answer carries a strict Content-Security-Policy:
the page loads nothing from anywhere but this server, runs no inline script
and cannot be framed.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import Response

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"
INDEX_FILE = "index.html"

CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "connect-src 'self'",
    "img-src 'self' data:",
    "frame-ancestors 'none'",
    "base-uri 'none'",
    "form-action 'none'",
))

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}


def _servable_files(folder: Path) -> dict[str, Path]:
    """Name -> path of every file in `folder` of a type the console serves."""
    if not folder.is_dir():
        return {}
    return {
        path.name: path
        for path in sorted(folder.iterdir())
        if path.is_file() and path.suffix in CONTENT_TYPES
    }


SERVABLE = _servable_files(CONSOLE_DIR)

router = APIRouter(tags=["console"], include_in_schema=False)


def _file_response(name: str, cache_control: str) -> Response:
    path = SERVABLE.get(name)
    if path is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "not found")
    try:
        content = path.read_bytes()
    except OSError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "not found") from None
    return Response(
        content,
        media_type=CONTENT_TYPES[path.suffix],
        headers={
            "Cache-Control": cache_control,
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


@router.get("/")
def console_page() -> Response:
    return _file_response(INDEX_FILE, "no-store")


@router.get("/console/{name}")
def console_file(name: str) -> Response:
    # no-cache: the browser revalidates, so a new version of the API serves
    # its own scripts at once (there is no build step to fingerprint them).
    return _file_response(name, "no-cache")
