"""A real headless Chromium (Debian's `chromium`, installed by `make system-deps`) driven by Playwright.

Playwright's own browser download does not work here, so it is pointed at the system browser.
`launch()` gives every run a fresh temporary profile (user-data-dir). The flags keep Chromium from
calling Google's services in the background, so every request a test sees comes from the page.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, sync_playwright

from tests.helpers.server import REPO_ROOT

CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
SCREENSHOTS = REPO_ROOT / "reports" / "screenshots"
LOCAL_HOSTS = {"127.0.0.1"}


@contextmanager
def chromium() -> Iterator[Browser]:
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("Debian's chromium is not installed (`make system-deps` installs it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=list(CHROMIUM_FLAGS))
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page: Page, name: str) -> Path:
    """A full-page PNG under reports/screenshots (a test artifact); its path is printed."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    # At the end of the page, the sticky message box sits in its own place, over nothing.
    page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
    page.screenshot(path=path, full_page=True)
    print(f"screenshot: {path}")
    return path


class NetworkWatch:
    """Every request the pages of a context make, and console errors.

    Requests for another host are recorded in `left` and aborted: they are the ones that would
    have left the machine. (A request the page's Content-Security-Policy blocks never reaches the
    network, nor this route, and shows as a console error instead.)
    """

    def __init__(self, context: BrowserContext) -> None:
        self.requests: list[str] = []
        self.left: list[str] = []
        self.console_errors: list[str] = []
        context.on("request", lambda request: self.requests.append(request.url))
        context.route("**/*", self._route)

    def watch(self, page: Page) -> Page:
        page.on("console", lambda message: self._console(message.type, message.text))
        page.on("pageerror", lambda error: self.console_errors.append(f"uncaught: {error}"))
        return page

    def _console(self, kind: str, text: str) -> None:
        if kind == "error":
            self.console_errors.append(text)

    def _route(self, route: Route) -> None:
        if urlsplit(route.request.url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            self.left.append(route.request.url)
            route.abort()

    def network_requests(self) -> list[str]:
        """The requests that use the network (blob: and data: URLs are the page's own memory)."""
        return [url for url in self.requests if urlsplit(url).scheme in ("http", "https", "ws", "wss")]
