"""The web console in a real browser (Debian's Chromium, driven by Playwright)
against the real stack: `bifrost init`, the API and two pools of two workers,
standing in for two hosts (each its own packages dir and host name).

One stack and one browser serve the module (the first visit, which must
find nothing, gets a stack of its own); each test opens a fresh browser
context (an empty sessionStorage) and signs in, with the admin token or the
read-only one (`BIFROST_READ_TOKEN`). Each test writes what it needs first
(its own packages, failures and executions), so the tests pass in any order
and when pytest-xdist splits the module between processes.

Writes `tests/artifacts/console-1280.png`, `console-390.png`, and appends
the click-to-every-worker-ready time of an install to `console-timings.txt`.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from src.foundation.local_redis import LocalRedis
from tests.support.browser import chromium
from tests.support.stack import STOP_TIMEOUT, Stack
from tests.support.wheels import build_sdist, build_wheel

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
HOSTS = ("host-a", "host-b")
WORKERS = 4
READY_TIMEOUT_MS = 90_000
# What every `expect` waits at most (Playwright's own default is 5 s): a
# deadline only bounds a failure, and a busy machine may take longer than
# 5 s to render what an API call brought back.
EXPECT_TIMEOUT_MS = 30_000
PLAYWRIGHT_EXPECT_DEFAULT_MS = 5_000

PACKAGE, VERSION = "console-pkg", "1.0.0"
FAILING, FAILING_VERSION = "needs-gcc", "1.0"
UPGRADABLE = "console-up"
# What the read-only test shows: a package of its own and a failure of its own.
SHOWN, SHOWN_VERSION = "console-shown", "1.0"
SHOWN_FAILING = "needs-gcc-too"
# The line the conflict test tries to save over another write (never installed).
MINE = "console-mine"
READ_TOKEN = "e2e-read-token-7d2e91b4"
READ_ONLY_DETAIL = ("the read-only token cannot change anything: "
                    "POST /api/packages/install needs the admin token")
MEGABYTES = re.compile(r"^\d+(\.\d)? MB$")

HELLO = ('def main(name="world"):\n    print(f"saying hello to {name}")\n'
         '    return {"greeting": f"Hello, {name}!", "n": len(name)}\n')

# Every control with no accessible name: aria-label, aria-labelledby, a
# <label>, or (buttons) its own text.
UNNAMED_CONTROLS_JS = """() => {
  const text = (node) => (node?.textContent ?? "").trim();
  const nameOf = (el) =>
    (el.getAttribute("aria-label") ?? "").trim()
    || (el.getAttribute("aria-labelledby") ?? "").split(/\\s+/)
         .map((id) => text(document.getElementById(id))).join(" ").trim()
    || [...(el.labels ?? [])].map(text).join(" ").trim()
    || (el.tagName === "BUTTON" ? text(el) : "")
    || (el.getAttribute("title") ?? "").trim();
  const controls = [...document.querySelectorAll("input, select, textarea, button, progress")];
  return {count: controls.length,
          unnamed: controls.filter((el) => !nameOf(el)).map((el) => el.outerHTML.slice(0, 160))};
}"""


# --- fixtures: one stack and one browser for the module --------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        from playwright.sync_api import expect

        expect.set_options(timeout=EXPECT_TIMEOUT_MS)
        try:
            yield launched
        finally:
            expect.set_options(timeout=PLAYWRIGHT_EXPECT_DEFAULT_MS)


def _two_host_stack(root: Path, redis_url: str, workers_per_host: int) -> Stack:
    return Stack(
        root, redis_url, pools=len(HOSTS), workers_per_pool=workers_per_host,
        extra_env={"UV_CACHE_DIR": str(root / "uv-cache"),
                   "PIP_CACHE_DIR": str(root / "pip-cache"),
                   "BIFROST_READ_TOKEN": READ_TOKEN},
        pool_env=[{"BIFROST_PACKAGES_DIR": str(root / f"{host}-packages"),
                   "BIFROST_HOST_NAME": host} for host in HOSTS],
    )


@pytest.fixture(scope="module")
def stack(browser: Any, tmp_path_factory: pytest.TempPathFactory,
          redis_url: str) -> Iterator[Stack]:
    """Started after the browser: without Chromium the module is skipped first."""
    root = tmp_path_factory.mktemp("console-stack")
    client = redis.from_url(redis_url)
    client.flushdb()  # the run owns this Redis; the stack starts from nothing
    client.close()
    stack = _two_host_stack(root, redis_url, WORKERS // len(HOSTS))
    build_wheel(stack.wheelhouse, PACKAGE, VERSION)
    build_wheel(stack.wheelhouse, UPGRADABLE, "1.0")
    build_sdist(stack.wheelhouse, FAILING, FAILING_VERSION, behaviour="fail")
    build_wheel(stack.wheelhouse, SHOWN, SHOWN_VERSION)
    build_sdist(stack.wheelhouse, SHOWN_FAILING, FAILING_VERSION, behaviour="fail")
    build_wheel(stack.wheelhouse, MINE, "1.0")
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


@dataclass
class Console:
    """A browser tab on the console, with what it asked for and what went wrong in it."""

    page: Any
    stack: Stack
    requests: list[Any] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.stack.port}/"

    def open(self) -> None:
        self.page.goto(self.url)

    def sign_in(self, token: str | None = None) -> None:
        """Signs in with `token`, the admin token by default."""
        from playwright.sync_api import expect

        self.open()
        self.page.get_by_label("Access token").fill(token or self.stack.token)
        self.page.get_by_role("button", name="Sign in").click()
        expect(self.page.locator("#console")).to_be_visible()
        expect(self.page.get_by_role("status").filter(has_text="Live")).to_be_visible()

    def tab(self, name: str) -> None:
        self.page.get_by_role("tab", name=name).click()

    def change(self, requirements_hash: str) -> Any:
        """The progress card of the change that made `requirements_hash`."""
        return self.page.locator(f'[data-testid="change"][data-hash="{requirements_hash}"]')

    def package_row(self, name: str) -> Any:
        return self.page.locator(f'[data-testid="package-row"][data-name="{name}"]')

    def add_package(self, name: str, version: str = "") -> None:
        self.page.get_by_label("Package", exact=True).fill(name)
        self.page.get_by_label("Version (optional)").fill(version)
        self.page.get_by_role("button", name="Add package").click()


@pytest.fixture
def console(browser: Any, stack: Stack, request: pytest.FixtureRequest) -> Iterator[Console]:
    with _console_on(browser, stack, request) as tab:
        yield tab


@pytest.fixture
def first_visit(browser: Any, tmp_path: Path, redis_server: LocalRedis,
                request: pytest.FixtureRequest) -> Iterator[Console]:
    """A console on a stack of its own, on a Redis of its own, that nothing
    has written to yet: what a new user's first visit finds, whatever the
    other tests of the module did (one worker per host)."""
    stack = _two_host_stack(tmp_path / "empty", redis_server.url, 1)
    try:
        stack.start()
        with _console_on(browser, stack, request) as tab:
            yield tab
    finally:
        stack.stop()


@contextlib.contextmanager
def _console_on(browser: Any, stack: Stack, request: pytest.FixtureRequest) -> Iterator[Console]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    tab = Console(page, stack)
    page.on("request", lambda sent: tab.requests.append(sent))
    page.on("pageerror", lambda error: tab.page_errors.append(str(error)))
    page.on("console", lambda message: tab.page_errors.append(message.text)
            if "Content Security Policy" in message.text else None)
    try:
        yield tab
    finally:
        context.close()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(f"\n===== logs of the stack =====\n{stack.logs(60)}")
    assert not tab.page_errors, f"errors in the page: {tab.page_errors}"


def _new_hash(stack: Stack, old: str) -> str:
    """The requirements hash once a write made in the page is stored."""
    def changed() -> str | None:
        current = stack.current_hash()
        return current if current != old else None

    return stack.wait(changed, 60, "the page's write to be stored")


def _expect_every_worker_ready(console: Console, requirements_hash: str) -> None:
    from playwright.sync_api import expect

    expect(console.change(requirements_hash).get_by_test_id("progress-text")).to_have_text(
        f"{WORKERS}/{WORKERS} workers ready on {requirements_hash[:6]}", timeout=READY_TIMEOUT_MS)


# --- tests ------------------------------------------------------------------------------------


def test_sign_in_wrong_token_then_right_one_and_sign_out(first_visit: Console) -> None:
    from playwright.sync_api import expect

    console = first_visit
    page, stack = console.page, console.stack
    workers = stack.expected_workers
    console.open()
    page.get_by_label("Access token").fill("not-the-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_test_id("sign-in-error")).to_contain_text("Wrong token")
    expect(page.get_by_test_id("sign-in-error")).to_contain_text("401")
    expect(page.locator("#console")).to_be_hidden()
    assert page.evaluate("sessionStorage.length") == 0

    console.sign_in()
    expect(page.get_by_test_id("packages")).to_contain_text("No packages yet")
    console.tab("Workers")
    current = stack.current_hash()
    expect(page.get_by_test_id("workers-summary")).to_have_text(
        f"{workers}/{workers} workers ready on {current[:6]}.", timeout=30_000)
    expect(page.get_by_test_id("worker-row")).to_have_count(workers)
    for host in HOSTS:
        expect(page.locator(f'[data-testid="host"][data-host="{host}"] h4')).to_have_count(1)
    # Each worker's resident memory, as the API measures it ("77 MB").
    memory = page.get_by_test_id("worker-memory")
    expect(memory.filter(has_text=MEGABYTES)).to_have_count(workers, timeout=30_000)
    measured = [w["rss_mb"] for w in stack.fleet()["workers"]]
    assert all(isinstance(mb, float | int) and mb > 1 for mb in measured), measured

    # Keyboard: the arrow keys move between tabs; focus is visible.
    page.get_by_role("tab", name="Workers").focus()
    page.keyboard.press("ArrowRight")
    expect(page.get_by_role("tab", name="Executions")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#panel-executions")).to_be_visible()
    expect(page.get_by_test_id("executions")).to_contain_text("No executions yet")
    page.keyboard.press("Tab")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none"), outline

    # The token lives in sessionStorage only: never in the DOM, never in a URL,
    # always in the Authorization header (the event stream's included).
    assert stack.token not in page.content()
    values = page.evaluate("[...document.querySelectorAll('input, textarea')].map(e => e.value)")
    assert stack.token not in values
    assert all(stack.token not in r.url for r in console.requests)
    events = [r for r in console.requests if r.url.endswith("/api/events")]
    assert events, "the page never opened the event stream"
    assert all(r.headers.get("authorization") == f"Bearer {stack.token}" for r in events)

    page.reload()  # the session survives a reload of the tab
    expect(page.locator("#console")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Access token")).to_be_visible()
    expect(page.locator("#console")).to_be_hidden()
    assert page.evaluate("sessionStorage.getItem('bifrost.adminToken')") is None


def test_install_shows_progress_until_every_worker_is_ready(console: Console) -> None:
    from playwright.sync_api import expect

    page, stack = console.page, console.stack
    console.sign_in()
    old = stack.current_hash()

    started = time.monotonic()
    console.add_package(PACKAGE, VERSION)
    new = _new_hash(stack, old)
    _expect_every_worker_ready(console, new)
    seconds = time.monotonic() - started
    _record_timing(seconds)

    assert stack.is_ready(stack.fleet(), new), stack.fleet()
    card = console.change(new)
    expect(card.locator("progress")).to_have_js_property("value", WORKERS)
    expect(card.get_by_test_id("progress-failures")).to_be_empty()
    row = console.package_row(PACKAGE)
    expect(row).to_contain_text(f"{PACKAGE}=={VERSION}")
    cells = row.locator("td")
    expect(cells).to_have_count(2 + len(HOSTS) + 1)  # line, locked, per host, remove
    for column in range(1, 2 + len(HOSTS)):  # locked, then installed on each host
        expect(cells.nth(column)).to_have_text(VERSION, timeout=30_000)
    expect(page.get_by_test_id("packages")).to_contain_text("On host-a")

    _assert_every_control_is_named(page)


def test_a_failing_package_shows_its_error_then_is_removed(console: Console) -> None:
    from playwright.sync_api import expect

    page, stack = console.page, console.stack
    console.sign_in()

    # Refused before anything is stored: the reason sits next to the field.
    console.add_package("no-such-package-anywhere")
    expect(page.get_by_test_id("package-name-error")).to_contain_text(
        "no-such-package-anywhere", timeout=30_000)
    expect(page.get_by_label("Package", exact=True)).to_have_attribute("aria-invalid", "true")
    console.add_package(PACKAGE, "not a version!")
    expect(page.get_by_test_id("package-version-error")).to_contain_text(
        "invalid version 'not a version!'", timeout=30_000)
    expect(page.get_by_test_id("package-name-error")).to_be_empty()

    old = stack.current_hash()
    console.add_package(FAILING, FAILING_VERSION)
    failing = _new_hash(stack, old)
    _expect_every_worker_ready(console, failing)  # workers come up without it
    failures = console.change(failing).get_by_test_id("progress-failures")
    expect(failures).to_contain_text(f"{FAILING}=={FAILING_VERSION}")
    # The installer's own words, its last line in sight, all of it on demand.
    expect(failures.locator(".error-text")).to_contain_text("needs a C compiler")
    failures.get_by_text("Installer output").click()
    expect(failures.locator("pre")).to_contain_text("command 'gcc' failed")

    # One alert for the package on that hash, with both hosts that saw it fail.
    alerts = page.get_by_test_id("alerts")
    expect(alerts).to_be_visible(timeout=30_000)
    expect(alerts.get_by_role("heading", name="Install failures")).to_be_visible()
    alert = alerts.get_by_test_id("alert").filter(has_text=f"{FAILING}=={FAILING_VERSION}")
    expect(alert).to_have_count(1)
    expect(alert).to_have_attribute("data-hash", failing)
    expect(alert.locator("code")).to_have_text(failing[:6])
    for host in HOSTS:
        expect(alert.get_by_test_id("alert-hosts")).to_contain_text(host, timeout=30_000)
    expect(alert.get_by_test_id("alert-delivery")).to_have_text("no webhook set", timeout=30_000)
    expect(alert.locator(".error-text")).to_contain_text("needs a C compiler")
    expect(alert.locator("time").first).to_have_text(re.compile(r"just now|min ago"))
    alert.get_by_text("Installer output").click()
    expect(alert.locator("pre")).to_contain_text("command 'gcc' failed")
    api_alerts = stack.client.get("/api/alerts", params={"open": "true"}).json()["alerts"]
    assert [sorted(a["hosts"]) for a in api_alerts
            if a["package"] == f"{FAILING}=={FAILING_VERSION}"] == [sorted(HOSTS)], api_alerts
    # The summary counts every open alert (another test's too, on this stack).
    failed = f"{len(api_alerts)} package{'s' if len(api_alerts) > 1 else ''} failed to install"
    expect(page.get_by_test_id("alerts-status")).to_contain_text(failed)
    _assert_every_control_is_named(page)
    _screenshots(page)  # the alert, the failed change and the packages, at 1280 and 390

    console.tab("Workers")
    expect(page.get_by_test_id("workers")).to_contain_text(f"failed: {FAILING}=={FAILING_VERSION}")
    console.tab("Packages")

    page.get_by_role("button", name=f"Remove {FAILING}").click()
    removed = _new_hash(stack, failing)
    _expect_every_worker_ready(console, removed)
    expect(console.change(removed).get_by_test_id("progress-failures")).to_be_empty()
    expect(console.package_row(FAILING)).to_have_count(0)
    assert f"{FAILING}==" not in stack.client.get("/api/requirements").json()["content"]


def test_saving_over_a_change_made_elsewhere_shows_the_conflict(console: Console) -> None:
    from playwright.sync_api import expect

    page, stack = console.page, console.stack
    console.sign_in()
    editor = page.get_by_label("Contents of requirements.txt")
    loaded = stack.client.get("/api/requirements").json()["content"]
    expect(editor).to_have_value(loaded)

    # A bad line is refused, naming it, next to the editor.
    editor.fill(loaded + "this is not a requirement!!\n")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.get_by_test_id("requirements-error")).to_contain_text("this is not a requirement",
                                                                      timeout=30_000)

    mine = loaded + f"{MINE}==1.0\n"
    editor.fill(mine)
    theirs = loaded + "# changed behind the page's back\n"
    answer = stack.client.put("/api/requirements", json={"content": theirs})
    assert answer.status_code == 200, answer.text
    expect(page.locator("#editor-status")).to_contain_text("changed on the server")
    expect(editor).to_have_value(mine)  # the page keeps our unsaved text

    page.get_by_role("button", name="Save", exact=True).click()
    conflict = page.get_by_test_id("conflict")
    expect(conflict).to_be_visible(timeout=30_000)
    expect(conflict).to_contain_text("Someone else changed requirements.txt since you loaded it")
    theirs_box = page.get_by_label("Their requirements.txt (read-only)")
    expect(theirs_box).to_have_value(theirs)
    expect(theirs_box).to_have_attribute("readonly", "")
    assert stack.client.get("/api/requirements").json()["content"] == theirs  # nothing lost

    page.get_by_role("button", name="Load their version").click()
    expect(editor).to_have_value(theirs)
    expect(conflict).to_be_hidden()
    page.get_by_role("button", name="Save", exact=True).click()  # now based on theirs
    expect(page.locator("#editor-status")).to_contain_text("nothing changed", timeout=30_000)


def test_run_a_workflow_from_the_page(console: Console) -> None:
    from playwright.sync_api import expect

    page, stack = console.page, console.stack
    stack.upload("workflows/hello.py", HELLO)
    console.sign_in()
    console.tab("Executions")
    page.get_by_label("Module").fill("workflows.hello")
    page.get_by_label("Function").fill("main")

    parameters = page.get_by_label("Parameters (JSON object)")
    parameters.fill('{"name": ')
    page.get_by_role("button", name="Run").click()
    expect(page.get_by_test_id("run-parameters-error")).to_contain_text("Not valid JSON")
    posted = [r for r in console.requests
              if r.method == "POST" and r.url.endswith("/api/executions")]
    assert not posted, "invalid JSON was sent"

    page.get_by_label("Function").fill("_private")
    parameters.fill("{}")
    page.get_by_role("button", name="Run").click()
    expect(page.locator("#run-function-error")).to_contain_text("_private", timeout=30_000)

    page.get_by_label("Function").fill("main")
    parameters.fill('{"name": "Ada"}')
    page.get_by_role("button", name="Run").click()
    expect(page.get_by_test_id("run-status")).to_have_text("Success", timeout=60_000)
    output = page.get_by_test_id("run-output")
    expect(output).to_contain_text('"greeting": "Hello, Ada!"')
    expect(output).to_contain_text('"n": 3')
    # What it printed, apart from its result.
    expect(page.get_by_test_id("run-stdout")).to_have_text("saying hello to Ada\n")
    expect(page.get_by_test_id("run-stderr")).to_have_count(0)
    expect(page.get_by_test_id("run-result")).to_contain_text(re.compile(r"peak memory \d"))
    row = page.get_by_test_id("execution-row").first
    expect(row).to_contain_text("workflows.hello:main", timeout=30_000)
    expect(row).to_contain_text("Success")
    # The execution's peak resident memory, in its own column and on its worker.
    expect(row.get_by_test_id("execution-peak")).to_have_text(MEGABYTES)
    console.tab("Workers")
    expect(page.get_by_test_id("last-peak").filter(
        has_text=re.compile(r"^last execution peak: \d+(\.\d)? MB$"))).not_to_have_count(0)


def test_upgrade_from_the_updates_list(console: Console) -> None:
    from playwright.sync_api import expect

    page, stack = console.page, console.stack
    installed = stack.install(UPGRADABLE)  # unpinned: locked at 1.0, the newest now
    stack.wait_ready(installed["hash"])
    build_wheel(stack.wheelhouse, UPGRADABLE, "2.0")  # the index gains a release
    console.sign_in()
    page.get_by_role("button", name="Check for updates").click()
    row = page.get_by_test_id("outdated-row").filter(has_text=UPGRADABLE)
    expect(row).to_contain_text("2.0", timeout=30_000)
    row.get_by_role("button", name=f"Upgrade {UPGRADABLE}").click()
    upgraded = _new_hash(stack, installed["hash"])
    _expect_every_worker_ready(console, upgraded)
    expect(console.package_row(UPGRADABLE).locator("td").nth(1)).to_have_text("2.0")


def _show_a_package_a_failure_and_an_execution(stack: Stack) -> None:
    """What the read-only test reads, written with the admin token: SHOWN
    installed, an open alert for SHOWN_FAILING (which is then removed again),
    and an execution."""
    content = stack.client.get("/api/requirements").json()["content"]
    lines = [line for line in content.splitlines()
             if not line.startswith((f"{SHOWN}==", f"{SHOWN_FAILING}=="))]
    wanted = [*lines, f"{SHOWN}=={SHOWN_VERSION}", f"{SHOWN_FAILING}=={FAILING_VERSION}"]
    answer = stack.client.put("/api/requirements", json={"content": "\n".join(wanted) + "\n"})
    assert answer.status_code == 200, answer.text
    stack.wait_ready(answer.json()["hash"])

    def alerted() -> bool:
        alerts = stack.client.get("/api/alerts", params={"open": "true"}).json()["alerts"]
        return any(a["package"] == f"{SHOWN_FAILING}=={FAILING_VERSION}" for a in alerts)

    stack.wait(alerted, 60, f"the alert for {SHOWN_FAILING}")
    answer = stack.client.put("/api/requirements",
                              json={"content": "\n".join([*lines, f"{SHOWN}=={SHOWN_VERSION}"])
                                    + "\n"})
    assert answer.status_code == 200, answer.text
    stack.wait_ready(answer.json()["hash"])
    stack.upload("workflows/hello.py", HELLO)
    assert stack.execute("workflows.hello")["status"] == "Success"


def test_the_read_only_token_shows_everything_and_changes_nothing(console: Console) -> None:
    from playwright.sync_api import expect

    page, stack = console.page, console.stack
    _show_a_package_a_failure_and_an_execution(stack)
    before = stack.current_hash()
    console.sign_in(READ_TOKEN)
    banner = page.get_by_test_id("read-only")

    # Everything reads as for the admin token.
    expect(console.package_row(SHOWN)).to_contain_text(f"{SHOWN}=={SHOWN_VERSION}")
    expect(page.get_by_test_id("alerts").get_by_test_id("alert").filter(
        has_text=SHOWN_FAILING)).to_have_count(1)
    content = stack.client.get("/api/requirements").json()["content"]
    expect(page.get_by_label("Contents of requirements.txt")).to_have_value(content)
    expect(banner).to_be_hidden()  # nothing tells the page yet: no route says who the token is

    # The first write is refused: the API's reason next to the form, then read-only mode.
    console.add_package(SHOWN, "9.9")
    expect(page.locator("#packages-status")).to_contain_text(
        f"This token is read-only: {READ_ONLY_DETAIL}", timeout=30_000)
    expect(page.get_by_label("Package", exact=True)).not_to_have_attribute("aria-invalid", "true")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("Signed in with the read-only token: changes are disabled")
    _expect_no_write_control(console)

    page.reload()  # the tab remembers it
    expect(banner).to_be_visible()
    expect(console.package_row(SHOWN)).to_contain_text(f"{SHOWN}=={SHOWN_VERSION}")
    _expect_no_write_control(console)
    _assert_every_control_is_named(page)

    writes = [r for r in console.requests if r.method not in ("GET", "HEAD")]
    assert [(r.method, r.url.split("/", 3)[-1]) for r in writes] == [
        ("POST", "api/packages/install")], writes
    assert stack.current_hash() == before
    # The read-only token is kept as the admin token is: never in the DOM or a URL.
    assert READ_TOKEN not in page.content()
    values = page.evaluate("[...document.querySelectorAll('input, textarea')].map(e => e.value)")
    assert READ_TOKEN not in values
    assert all(READ_TOKEN not in r.url for r in console.requests)
    events = [r for r in console.requests if r.url.endswith("/api/events")]
    assert events and all(r.headers.get("authorization") == f"Bearer {READ_TOKEN}" for r in events)

    # Signing out forgets it; the admin token changes things again.
    page.get_by_role("button", name="Sign out").click()
    assert page.evaluate("sessionStorage.getItem('bifrost.readOnly')") is None
    console.sign_in()
    expect(banner).to_be_hidden()
    expect(page.get_by_role("button", name="Add package")).to_be_enabled()
    expect(page.get_by_role("button", name=f"Remove {SHOWN}")).to_be_enabled()


def _expect_no_write_control(console: Console) -> None:
    """Read-only mode: every control that changes something is disabled; reads still work."""
    from playwright.sync_api import expect

    page = console.page
    console.tab("Packages")
    for name in ("Add package", "Upgrade all", "Save", f"Remove {SHOWN}"):
        expect(page.get_by_role("button", name=name, exact=True)).to_be_disabled()
    expect(page.get_by_label("Package", exact=True)).to_be_disabled()
    expect(page.get_by_label("Contents of requirements.txt")).to_have_attribute("readonly", "")
    expect(page.get_by_role("button", name="Check for updates")).to_be_enabled()
    expect(page.get_by_role("button", name="Reload")).to_be_enabled()
    console.tab("Workers")
    expect(page.get_by_role("button", name="Recycle all")).to_be_disabled()
    expect(page.get_by_test_id("workers-summary")).to_contain_text(f"{WORKERS}/{WORKERS} workers")
    console.tab("Executions")
    expect(page.get_by_role("button", name="Run", exact=True)).to_be_disabled()
    expect(page.get_by_test_id("execution-row").first).to_be_visible()
    console.tab("Packages")


def test_the_page_says_when_the_api_is_unreachable_and_catches_up(console: Console) -> None:
    from playwright.sync_api import expect

    page, stack = console.page, console.stack
    console.sign_in()
    banner = page.get_by_test_id("unreachable")
    connection = page.locator("#connection")
    expect(banner).to_be_hidden()
    expect(connection).to_have_text("Live")
    seen = re.compile(r"^\d+-\d+$")
    expect(connection).to_have_attribute("data-last-event-id", seen)  # an event came

    _kill_the_api(stack)  # the event stream breaks; nothing answers any more
    expect(connection).to_have_text("Reconnecting to live events…", timeout=30_000)
    expect(banner).to_be_visible(timeout=30_000)
    expect(banner).to_contain_text("API unreachable")

    _start_the_api_again(stack)
    expect(banner).to_be_hidden(timeout=30_000)  # the page retries on its own
    expect(connection).to_have_text("Live", timeout=30_000)
    resumed = [r for r in console.requests
               if r.url.endswith("/api/events") and r.headers.get("last-event-id")]
    assert resumed, "the stream reconnected without Last-Event-ID"
    assert all(r.headers.get("authorization") == f"Bearer {stack.token}" for r in resumed)
    console.tab("Workers")  # and the page reads the API again
    expect(page.get_by_test_id("workers-summary")).to_contain_text(
        f"{WORKERS}/{WORKERS} workers ready", timeout=30_000)


# --- helpers ------------------------------------------------------------------------------------


def _kill_the_api(stack: Stack) -> None:
    """SIGKILL the API process (the pools keep running): an abrupt outage."""
    assert stack.api is not None
    os.killpg(stack.api.pid, signal.SIGKILL)
    stack.api.wait(STOP_TIMEOUT)


def _start_the_api_again(stack: Stack) -> None:
    """The API again on the same port (the page's origin), as `Stack.start` runs it."""
    stack.api = stack._popen("api", ["api"], stack.env())
    stack.wait(lambda: stack.client.get("/health").status_code == 200, 60, "the API to answer")


def _assert_every_control_is_named(page: Any) -> None:
    found = page.evaluate(UNNAMED_CONTROLS_JS)
    assert found["count"] >= 15, found
    assert found["unnamed"] == [], found["unnamed"]


def _screenshots(page: Any) -> None:
    """The Packages panel at 1280 and 390 px; no panel scrolls sideways at 390 px."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.set_viewport_size({"width": 1280, "height": 800})
    page.screenshot(path=str(ARTIFACTS / "console-1280.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    for tab in ("Workers", "Executions", "Packages"):
        page.get_by_role("tab", name=tab).click()
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the {tab} tab scrolls sideways at 390 px: {width} px wide"
    page.screenshot(path=str(ARTIFACTS / "console-390.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 800})


def _record_timing(seconds: float) -> None:
    line = (f"{time.strftime('%Y-%m-%dT%H:%M:%S')} console install click -> "
            f"{WORKERS}/{WORKERS} workers ready: {seconds:.2f} s\n")
    print(line, end="")
    ARTIFACTS.mkdir(exist_ok=True)
    with open(ARTIFACTS / "console-timings.txt", "a") as timings:
        timings.write(line)
