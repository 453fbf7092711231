"""`/docs` and `/redoc` in a real headless Chromium: they render from the service's own assets, with
a Content-Security-Policy that allows nothing external, and no request leaves the machine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect

from tests.helpers.browser import NetworkWatch, chromium, screenshot
from tests.helpers.server import ServiceProcess, start_service

pytestmark = pytest.mark.timeout(180)

OPERATIONS = ("/v1/chat/completions", "/v1/models", "/v1/models/{model_id}", "/healthz", "/readyz")
# ReDoc 2.5 always shows the Redocly logo from its CDN in its side menu; the CSP blocks it before any
# request is made (the logo is hidden when it fails to load).
REDOC_BLOCKED_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    with start_service(tmp_path_factory.mktemp("docs")) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as running:
        yield running


def _csp_sources(policy: str) -> set[str]:
    return {source for directive in policy.split(";") for source in directive.split()[1:]}


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_docs_pages_allow_nothing_external(service: ServiceProcess, path: str) -> None:
    response = httpx.get(service.base_url + path)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    # Only the page's own origin (and its in-memory data:/blob: URLs): no host, no scheme-wide http(s).
    assert _csp_sources(policy) <= {"'self'", "'none'", "'unsafe-inline'", "data:", "blob:"}, policy
    assert "unsafe-eval" not in policy
    assert "https://" not in response.text and "http://" not in response.text


def test_swagger_ui_renders_offline_and_tries_an_operation(
    service: ServiceProcess, browser: Browser, tmp_path: Path
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    network = NetworkWatch(context)
    page = network.watch(context.new_page())
    page.goto(f"{service.base_url}/docs")
    operations = page.locator(".opblock-summary-path")
    expect(operations.first).to_be_visible(timeout=30_000)
    listed = {text.strip().replace("\u200b", "") for text in operations.all_inner_texts()}
    assert set(OPERATIONS) <= listed, listed
    screenshot(page, "docs-swagger-ui")

    # "Try it out" calls the API of the same origin from the page (connect-src 'self').
    models = page.locator(".opblock-get", has_text="/v1/models").filter(has_text="List the served teams")
    models.locator(".opblock-summary").click()
    models.get_by_role("button", name="Try it out").click()
    models.get_by_role("button", name="Execute").click()
    expect(models.locator(".live-responses-table tbody .response-col_status").first).to_have_text("200")
    expect(models.locator(".live-responses-table")).to_contain_text("demo-team")
    screenshot(page, "docs-swagger-ui-try-it-out")

    assert network.left == []
    assert network.network_requests(), "the page made no request at all?"
    assert all(url.startswith(service.base_url + "/") for url in network.network_requests()), (
        network.network_requests()
    )
    assert f"{service.base_url}/static/vendor/swagger-ui-bundle.js" in network.requests
    assert network.console_errors == []
    context.close()


def test_redoc_renders_offline(service: ServiceProcess, browser: Browser) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    network = NetworkWatch(context)
    page = network.watch(context.new_page())
    page.goto(f"{service.base_url}/redoc")
    expect(page.get_by_role("heading", name="Run a team as a chat completion")).to_be_visible(timeout=30_000)
    expect(page.get_by_role("heading", name="List the served teams")).to_be_visible()
    # Search runs in ReDoc's blob: worker (worker-src blob:).
    page.get_by_placeholder("Search...").fill("served")
    found = page.get_by_role("search").get_by_role("menuitem", name="Describe one served team")
    expect(found).to_be_visible()
    screenshot(page, "docs-redoc")

    assert network.left == []
    local = [url for url in network.network_requests() if url != REDOC_BLOCKED_LOGO]
    assert all(url.startswith(service.base_url + "/") for url in local), network.network_requests()
    assert f"{service.base_url}/static/vendor/redoc.standalone.js" in network.requests
    # The only console error is the CSP refusing the CDN logo.
    for error in network.console_errors:
        assert "Content Security Policy" in error and REDOC_BLOCKED_LOGO in error, error
    context.close()
