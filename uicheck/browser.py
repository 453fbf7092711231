"""Open WebUI's chat page in Debian's chromium, driven by Playwright as a person would use it."""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from playwright.async_api import Browser, BrowserContext, Locator, Page, Playwright, Route
from playwright.async_api import TimeoutError as PlaywrightTimeout

from loadtests.procs import ServerProcess, free_port
from uicheck.procs import spawn

# Chromium's own background traffic (updates, sync, field trials) would be refused by this machine's closed
# network, many connections at a time: switch it off.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-breakpad",
]
_REASONING_LABEL = re.compile(r"Thought for|Thinking")


def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        raise RuntimeError(
            "Debian's chromium is not installed (apt-get install chromium); `make ui-check` does it"
        )
    return path


def spawn_chromium(log_path: Path) -> tuple[ServerProcess, Path]:
    """Debian's chromium, headless, in its own session, with DevTools on a loopback port; and its profile.

    The check starts the browser itself rather than through Playwright's launch: a Ctrl-C reaches
    Playwright's driver too, and a browser the driver started outlives it for a while; one started here is
    stopped here, with its whole process group, on every path. Await ``/json/version`` next.
    """
    port = free_port()
    profile = Path(tempfile.mkdtemp(prefix="ui-check-chromium-"))
    cmd = [
        chromium_path(),
        *CHROMIUM_FLAGS,
        "--remote-debugging-address=127.0.0.1",
        f"--remote-debugging-port={port}",
        f"--user-data-dir={profile}",
        "about:blank",
    ]
    return spawn("chromium", cmd, None, profile, log_path, port), profile


async def connect(pw: Playwright, browser: ServerProcess) -> Browser:
    return await pw.chromium.connect_over_cdp(browser.url, timeout=60_000)


@dataclass
class Reply:
    """One assistant message as the page shows it."""

    text: str  # everything visible in the message while the reasoning block is folded
    answer: str  # the rendered answer alone (the markdown blocks outside the reasoning block)
    reasoning_label: str | None  # "Thought for N seconds" when a reasoning block is there
    reasoning_folded: bool
    expanded_text: str = ""  # the whole message once the reasoning block is opened


class ChatPage:
    """One browser tab on Open WebUI. Requests that leave 127.0.0.1 are refused and recorded."""

    def __init__(self, context: BrowserContext, base_url: str, shots: Path) -> None:
        self._context = context
        self.base_url = base_url.rstrip("/")
        self.shots = shots
        self.external_requests: list[str] = []
        self.page: Page | None = None

    async def start(self) -> None:
        self.page = await self._context.new_page()
        self.page.set_default_timeout(30_000)
        await self._context.route("**/*", self._guard)

    async def _guard(self, route: Route) -> None:
        host = urlsplit(route.request.url).hostname or ""
        if host in ("127.0.0.1", "localhost", "::1") or route.request.url.startswith(("data:", "blob:")):
            await route.continue_()
        else:
            self.external_requests.append(route.request.url)
            await route.abort()

    @property
    def p(self) -> Page:
        assert self.page is not None, "start() first"
        return self.page

    async def new_chat(self, model: str) -> None:
        """A new chat with ``model`` selected (``?models=`` is what Open WebUI's model menu sets)."""
        await self.p.goto(f"{self.base_url}/?models={model}", wait_until="domcontentloaded", timeout=60_000)
        await self.p.locator("#chat-input").wait_for(state="visible", timeout=60_000)
        # The release notes open once per user, over the chat.
        notes = self.p.get_by_role("button", name="Okay, Let's Go!")
        try:
            await notes.wait_for(state="visible", timeout=3_000)
            await notes.click()
        except PlaywrightTimeout:
            pass
        selector = self.p.locator("#model-selector-model-button")
        await selector.wait_for(state="visible")
        shown = await selector.get_attribute("aria-label") or ""
        if not shown.endswith(f": {model}"):
            raise AssertionError(f"the model menu says {shown!r}, not {model!r}")

    async def set_external_task_model(self, model: str, shot: str) -> Path:
        """Admin Panel > Settings > Interface > Tasks: External Task Model = ``model``, then Save."""
        await self.p.goto(f"{self.base_url}/admin/settings/interface", wait_until="domcontentloaded")
        choice = self.p.locator("select#task-model-external")
        await choice.wait_for(state="visible", timeout=60_000)
        await choice.select_option(value=model)
        path = await self.screenshot(shot)
        await self.p.get_by_role("button", name="Save", exact=True).click()
        return path

    def replies(self) -> Locator:
        """The assistant messages of the open chat, oldest first (one list item each)."""
        return self.p.locator(".message-listitem").filter(has=self.p.locator(".chat-assistant"))

    async def send(self, text: str) -> None:
        box = self.p.locator("#chat-input")
        await box.click()
        await self.p.keyboard.type(text)
        await self.p.locator("#send-message-button").click()

    async def wait_reply(self, count: int, timeout_s: float = 180.0) -> Locator:
        """Wait until the ``count``-th assistant message is complete (its Regenerate button is there)."""
        deadline = time.monotonic() + timeout_s
        item = self.replies().nth(count - 1)
        await item.wait_for(state="attached", timeout=timeout_s * 1000)
        # Open WebUI adds the Regenerate button under a message once it marks the message done.
        remaining = max(1.0, deadline - time.monotonic())
        await item.locator("button[aria-label='Regenerate']").wait_for(
            state="attached", timeout=remaining * 1000
        )
        return item.locator(".chat-assistant")

    async def read_reply(self, message: Locator) -> Reply:
        label_button = message.locator("button[aria-expanded]").filter(has_text=_REASONING_LABEL)
        label: str | None = None
        folded = False
        if await label_button.count():
            label = (await label_button.first.inner_text()).strip()
            folded = (await label_button.first.get_attribute("aria-expanded")) == "false"
        answer_parts = await message.locator("#response-content-container .markdown-prose").all_inner_texts()
        return Reply(
            text=(await message.inner_text()).strip(),
            answer="\n".join(part.strip() for part in answer_parts).strip(),
            reasoning_label=label,
            reasoning_folded=folded,
        )

    async def expand_reasoning(self, message: Locator, reply: Reply) -> Reply:
        button = message.locator("button[aria-expanded]").filter(has_text=_REASONING_LABEL).first
        await button.click()
        await (
            message.locator("button[aria-expanded='true']").filter(has_text=_REASONING_LABEL).first.wait_for()
        )
        reply.expanded_text = (await message.inner_text()).strip()
        return reply

    async def collapse_reasoning(self, message: Locator) -> None:
        button = message.locator("button[aria-expanded='true']").filter(has_text=_REASONING_LABEL)
        if await button.count():
            await button.first.click()

    async def screenshot(self, name: str) -> Path:
        self.shots.mkdir(parents=True, exist_ok=True)
        path = self.shots / name
        await self.p.screenshot(path=str(path), full_page=True)
        return path

    async def screenshot_element(self, locator: Locator, name: str) -> Path:
        self.shots.mkdir(parents=True, exist_ok=True)
        path = self.shots / name
        await locator.screenshot(path=str(path))
        return path
