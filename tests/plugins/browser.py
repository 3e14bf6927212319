"""Headless Debian Chromium driven by Playwright, and a logged-in chat page on the live server."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic",
]


@pytest.fixture
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: tests/prepare_environment.sh installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def log_in(page: Any, url: str, username: str = "alice", password: str = "wonderland-42") -> None:
    """Sign in through the site's login form (the test user of conftest by default)."""
    page.goto(f"{url}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}/")


@pytest.fixture
def chat_page(live_server_process, user, browser) -> Any:
    """A logged-in page on a fresh session (of chat-agent unless `agent` says otherwise)."""

    def open_page(name: str = "browser", agent: str = "chat-agent", **context_options: Any) -> Any:
        """`context_options` are Playwright's (viewport, timezone_id, geolocation, permissions…)."""
        page = browser.new_page(**context_options)
        log_in(page, live_server_process.url)
        page.goto(f"{live_server_process.url}/chat/{agent}/{name}/")
        page.wait_for_timeout(500)  # the page socket connects
        return page

    return open_page
