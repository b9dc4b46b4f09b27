"""Debian's Chromium, driven by Playwright, for the console's browser tests.

Playwright's own browser downloads are not used: the tests drive the
distribution's `/usr/bin/chromium` (`.ci/run` installs Debian's chromium).
When it or the playwright package is missing, the tests are skipped, saying so.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

DEBIAN_CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SKIP_REASON = ".ci/run installs Debian's chromium"


def chromium_path() -> str | None:
    if DEBIAN_CHROMIUM.is_file():
        return str(DEBIAN_CHROMIUM)
    return shutil.which("chromium")


@contextmanager
def chromium() -> Iterator[Any]:
    """A launched headless Chromium (a playwright `Browser`); skips the test
    when Chromium or playwright is not installed."""
    executable = chromium_path()
    if executable is None:
        pytest.skip(f"no chromium at {DEBIAN_CHROMIUM} or on PATH ({SKIP_REASON})")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.skip(f"playwright cannot be imported: {exc} ({SKIP_REASON})")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()
