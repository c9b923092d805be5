"""Browser tests' fixtures: a real samtune (`samtune up`: API, worker and beat on the embedded default, in
a data directory of its own) and real headless Chromium driven by Playwright. Any console error or uncaught
page error fails the test that caused it.

    def test_x(ui_server, signed_in_page):   # a page already signed in with ui_server.key
        signed_in_page.goto(ui_server.url + "/datasets")
        shot(signed_in_page, "datasets")     # docs/screenshots/datasets.png at 1280x800
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from tests.support.ports import free_port
from tests.support.servers import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
SAMTUNE = str(Path(sys.executable).with_name("samtune"))
# Two shared CPU cores: give the page time. Waits use locators and `expect`, never a string expression
# (Playwright would eval it in the page, which the Content-Security-Policy rightly refuses).
expect.set_options(timeout=20_000)


@dataclass
class UiServer:
    url: str
    key: str
    data_dir: Path
    log_path: Path
    api: httpx.Client = field(repr=False)
    env: dict[str, str] = field(repr=False, default_factory=dict)

    def new_key(self, workspace: str) -> str:
        """A key in another workspace (created if new), made the way a user makes one: a test that needs
        a workspace of its own (empty states) uses it."""
        made = subprocess.run(
            [SAMTUNE, "keys", "create", "--workspace", workspace],
            env=self.env,
            check=True,
            capture_output=True,
            cwd=self.data_dir.parent,
        )
        return made.stdout.decode().strip().splitlines()[-1]

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


@pytest.fixture(scope="session")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiServer]:
    base = tmp_path_factory.mktemp("ui-samtune")
    data_dir = base / "data"
    env = {
        **os.environ,
        "SAMTUNE_DATA_DIR": str(data_dir),
        "SAMTUNE_UI_VENDOR_DIR": str(ROOT / "node_modules"),
        # info: the supervisor logs which pid runs the API ("started api (pid N)"), which the flow test kills.
        "SAMTUNE_LOG_LEVEL": "info",
    }
    for name in ("SAMTUNE_DATABASE_URL", "SAMTUNE_STORAGE_URL", "SAMTUNE_BROKER_URL", "SAMTUNE_REDIS_URL"):
        env.pop(name, None)  # the embedded default: SQLite, a local folder, the server-less broker
    port = free_port()
    log_path = base / "samtune.log"
    server = ServerProcess(
        [SAMTUNE, "up", "--host", "127.0.0.1", "--port", str(port)],
        port=port,
        env=env,
        log_path=log_path,
        cwd=base,
        name="samtune up",
    )
    url = server.url
    # The supervisor stops its children on SIGTERM, the stop signal.
    with server.start(timeout=90, interval=0.3):
        # After `up` has migrated the database; the key is the command's last line, as for a user.
        made = subprocess.run(
            [SAMTUNE, "keys", "create", "--workspace", "ui"],
            env=env,
            check=True,
            capture_output=True,
            cwd=base,
        )
        key = made.stdout.decode().strip().splitlines()[-1]
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as api:
            yield UiServer(url=url, key=key, data_dir=data_dir, log_path=log_path, api=api, env=env)


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)")

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class ConsoleWatch:
    """Collects console errors and uncaught page errors; the page fixture fails the test on any."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.allowed: list[str] = []

    def allow(self, fragment: str) -> None:
        """A console error the test provokes on purpose (a rejected upload's 4xx is logged by Chromium)."""
        self.allowed.append(fragment)

    def record(self, text: str) -> None:
        if not any(fragment in text for fragment in self.allowed):
            self.errors.append(text)


@pytest.fixture
def console() -> ConsoleWatch:
    return ConsoleWatch()


@pytest.fixture
def page(browser, console: ConsoleWatch, ui_server: UiServer) -> Iterator[object]:
    context = browser.new_context(viewport=DESKTOP, base_url=ui_server.url)
    context.set_default_timeout(15_000)
    pg = context.new_page()
    pg.on(
        "console",
        lambda msg: (
            console.record(f"console.{msg.type}: {msg.text} @ {msg.location.get('url', '')}")
            if msg.type == "error"
            else None
        ),
    )
    pg.on("pageerror", lambda exc: console.record(f"pageerror: {exc}"))
    yield pg
    context.close()
    assert not console.errors, "the browser reported errors:\n" + "\n".join(console.errors)


def sign_in(page, server: UiServer, key: str | None = None) -> None:
    page.goto("/signin")
    page.get_by_label("API key").fill(key or server.key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/signin" not in url)


@pytest.fixture
def signed_in_page(page, ui_server: UiServer):
    sign_in(page, ui_server)
    return page


def shot(page, name: str) -> Path:
    """Save docs/screenshots/<name>.png of the page at 1280x800 (the viewport is restored afterwards)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    before = page.viewport_size
    if before != DESKTOP:
        page.set_viewport_size(DESKTOP)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    if before and before != DESKTOP:
        page.set_viewport_size(before)
    return path


def no_horizontal_scroll(page) -> bool:
    """True when nothing makes the page wider than its viewport (the phone-width check)."""
    page.wait_for_timeout(300)  # charts resize on a ResizeObserver callback, a frame or two later
    wide = page.evaluate(
        """() => Array.from(document.querySelectorAll("body *"))
            .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1 && !e.closest(".table-wrap"))
            .slice(0, 5)
            .map((e) => `${e.tagName.toLowerCase()}#${e.id}.${e.className} right=${e.getBoundingClientRect().right}`)"""
    )
    fits = bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"))
    if not fits:
        print("wider than the viewport:", wide)
    return fits
