"""The console's routes on the real server: `GET /` and `GET /console/{file}`.

The page needs no token, carries a strict Content-Security-Policy, serves
only the files of its own folder (no path, however encoded, reaches any other
file) and names no outside URL: it works offline, with no CDN.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from src.api.routers import console
from tests.integration.api.conftest import Api, serving

CONSOLE_DIR = Path(console.__file__).resolve().parent.parent / "console"
EXPECTED_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}


@pytest.fixture
def api(admin_token: str) -> Iterator[Api]:
    """The whole app (create_app), served: the console needs no store or Redis."""
    with serving(admin_token) as served:
        yield served


def console_files() -> list[Path]:
    return sorted(path for path in CONSOLE_DIR.iterdir() if path.is_file())


def test_the_page_is_served_at_the_root_without_a_token(api: Api) -> None:
    response = api.anonymous.get("/")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["content-security-policy"] == EXPECTED_CSP
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert '<script type="module" src="/console/app.js"></script>' in response.text
    assert response.content == (CONSOLE_DIR / "index.html").read_bytes()
    # The API itself still wants the token.
    assert api.anonymous.get("/api/workers").status_code == 401


def test_every_console_file_is_served_with_its_content_type(api: Api) -> None:
    files = console_files()
    assert {path.suffix for path in files} >= {".html", ".js", ".css"}, files
    for path in files:
        response = api.anonymous.get(f"/console/{path.name}")
        assert response.status_code == 200, (path.name, response.text)
        expected = CONTENT_TYPES[path.suffix]
        assert response.headers["content-type"].startswith(expected), (path.name, response.headers)
        assert response.headers["content-security-policy"] == EXPECTED_CSP
        assert response.content == path.read_bytes(), path.name


@pytest.mark.parametrize("target", [
    "/console/../routers/console.py",
    "/console/..%2Frouters%2Fconsole.py",
    "/console/%2e%2e%2frouters%2fconsole.py",
    "/console/%2e%2e/app.py",
    "/console/..%5Capp.py",
    "/console/../../../../../../etc/passwd",
    "/console/%2Fetc%2Fpasswd",
    "/console/app.js%00.css",
    "/console/nope.js",
    "/console/",
    "/console",
    "/console/.",
    "/console/..",
    "/console/__init__.py",
    "/console/app.py",
])
def test_nothing_outside_the_allow_list_is_served(api: Api, target: str) -> None:
    status, body = api.raw("GET", target)
    assert status == 404, (target, status, body)
    assert "CONTENT_SECURITY_POLICY" not in str(body)


def test_the_allow_list_is_exactly_the_folder() -> None:
    assert set(console.SERVABLE) == {path.name for path in console_files()}
    assert all(path.parent == CONSOLE_DIR for path in console.SERVABLE.values())


OUTSIDE_URL = re.compile(r"(?i)\b(?:https?|wss?|ftp):|(?:src|href)\s*=\s*[\"']?//|url\(\s*[\"']?//")


def test_no_console_file_names_an_outside_url() -> None:
    for path in console_files():
        text = path.read_text(encoding="utf-8")
        found = OUTSIDE_URL.search(text)
        assert found is None, f"{path.name} names an outside URL: {found.group(0) if found else ''}"


def test_every_link_in_the_page_stays_on_the_server() -> None:
    page = (CONSOLE_DIR / "index.html").read_text(encoding="utf-8")
    links = re.findall(r"(?:src|href)\s*=\s*\"([^\"]*)\"", page)
    assert links, "the page links its script and style"
    for link in links:
        assert link.startswith("/console/") or link.startswith("data:"), link
        if link.startswith("/console/"):
            assert link.removeprefix("/console/") in console.SERVABLE, link


UNSAFE_SINKS = ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                "new Function", "setAttribute(\"style\"", "localStorage")


def test_the_scripts_never_parse_text_as_html() -> None:
    """Requirement lines and installer errors are untrusted: only text goes in."""
    for path in console_files():
        if path.suffix != ".js":
            continue
        text = path.read_text(encoding="utf-8")
        for sink in UNSAFE_SINKS:
            assert sink not in text, f"{path.name} uses {sink}"


IMPORT = re.compile(r"""^\s*(?:import|export)\b[^;]*?\bfrom\s+["']([^"']+)["']""", re.MULTILINE)


def test_every_module_a_script_imports_is_served() -> None:
    """The scripts import each other by relative path: each must be a file the
    route serves (a missing one breaks the page even where no browser test runs)."""
    found = 0
    for path in console_files():
        if path.suffix != ".js":
            continue
        for target in IMPORT.findall(path.read_text(encoding="utf-8")):
            found += 1
            assert target.startswith("./") and target.endswith(".js"), (path.name, target)
            assert target.removeprefix("./") in console.SERVABLE, (path.name, target)
    assert found >= 10, found
