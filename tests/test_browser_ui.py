"""The HTMX chat page in Debian's Chromium (Playwright), against a live daphne server and the
fake upstream. Screenshots of the main states go to test-artifacts/."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agents_app.testing.fake_openai import Reply, ToolCallSpec

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
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


@pytest.fixture
def chat_page(live_server_process, user, browser) -> Any:
    """A logged-in page on a fresh chat-agent session."""

    def open_page(name: str = "browser") -> Any:
        page = browser.new_page()
        page.goto(f"{live_server_process.url}/login/")
        page.fill("#id_username", "alice")
        page.fill("#id_password", "wonderland-42")
        page.click("button[type=submit]")
        page.wait_for_url(f"{live_server_process.url}/")
        page.goto(f"{live_server_process.url}/chat/chat-agent/{name}/")
        page.wait_for_timeout(500)  # the page socket connects
        return page

    return open_page


def send(page: Any, text: str) -> None:
    page.fill("#message", text)
    page.keyboard.press("Enter")


def test_the_answer_grows_token_by_token_and_ends_complete(chat_page, model):
    model.script(Reply.text("The quick brown fox jumps over the lazy dog again and again.", delay=0.15))
    page = chat_page()
    send(page, "Tell me about the fox")
    page.wait_for_selector("#streaming-slot .message-assistant")
    lengths = set()
    for _ in range(6):
        lengths.add(len(page.inner_text("#streaming-slot")))
        page.wait_for_timeout(150)
    assert len(lengths) >= 3  # the text grew over several frames
    page.wait_for_selector("#messages .message-assistant", timeout=15000)
    assert "lazy dog again and again." in page.inner_text("#messages .message-assistant")
    page.screenshot(path=str(ARTIFACTS / "chat-streamed-answer.png"), full_page=True)


def test_stop_cancels_the_answer_mid_stream(chat_page, model):
    model.script(Reply.text(" ".join(f"word{i}" for i in range(60)), delay=0.15))
    page = chat_page()
    send(page, "Count")
    page.wait_for_selector("#streaming-slot .message-assistant")
    page.click("#stop")
    page.wait_for_selector("#messages .message-assistant", timeout=10000)
    assert model.wait_for_disconnect(5)
    assert "word59" not in page.inner_text("#messages")


def test_approving_a_tool_runs_it_and_the_answer_continues(chat_page, model):
    model.script(Reply.tool_calls([ToolCallSpec("deleteFile", '{"path": "/tmp/x"}', id="del1")]), Reply.text("The file is gone."))
    page = chat_page()
    send(page, "Delete /tmp/x")
    page.wait_for_selector("button.approve", timeout=10000)
    page.screenshot(path=str(ARTIFACTS / "chat-approval-pending.png"), full_page=True)
    page.click("button.approve")
    page.wait_for_function("document.querySelector('#messages').innerText.includes('The file is gone.')", timeout=15000)
    assert "output-available" in page.inner_text("#messages")


def test_rejecting_a_tool_tells_the_model_it_was_denied(chat_page, model):
    model.script(Reply.tool_calls([ToolCallSpec("deleteFile", '{"path": "/etc"}', id="del2")]), Reply.text("I will not delete it."))
    page = chat_page()
    send(page, "Delete /etc")
    page.wait_for_selector("button.reject", timeout=10000)
    page.click("button.reject")
    page.wait_for_function("document.querySelector('#messages').innerText.includes('I will not delete it.')", timeout=15000)
    assert "output-denied" in page.inner_text("#messages")


def test_regenerate_then_switch_back_to_the_first_answer(chat_page, model):
    model.script(Reply.text("First answer."), Reply.text("Second answer."))
    page = chat_page()
    send(page, "Question")
    page.wait_for_function("document.querySelector('#messages').innerText.includes('First answer.')", timeout=10000)
    page.click("button.regenerate")
    page.wait_for_function("document.querySelector('#messages').innerText.includes('Second answer.')", timeout=10000)
    assert page.inner_text(".branch-position") == "2/2"
    page.click("button[aria-label='Previous version']")
    page.wait_for_function("document.querySelector('#messages').innerText.includes('First answer.')", timeout=10000)
    assert page.inner_text(".branch-position") == "1/2"


def test_two_pages_stay_in_sync(chat_page, model):
    model.script(Reply.text("Both tabs see this.", delay=0.05))
    first, second = chat_page("sync"), chat_page("sync")
    send(first, "Hello from tab one")
    second.wait_for_function("document.querySelector('#messages').innerText.includes('Both tabs see this.')", timeout=15000)
    assert "Hello from tab one" in second.inner_text("#messages")


def test_a_reload_mid_stream_resumes_the_answer(chat_page, model, live_server_process):
    model.script(Reply.text(" ".join(f"chunk{i}" for i in range(40)), delay=0.1))
    page = chat_page("reload")
    send(page, "Long answer please")
    page.wait_for_selector("#streaming-slot .message-assistant")
    page.reload()
    page.wait_for_function("document.querySelector('#messages').innerText.includes('chunk39')", timeout=20000)
    assert page.inner_text("#messages").count("chunk20") == 1


def test_model_output_with_a_script_tag_is_shown_not_executed(chat_page, model):
    model.script(Reply.text('<script>window.pwned = true</script><img src=x onerror="window.pwned=true">'))
    page = chat_page("xss")
    send(page, "Say something dangerous")
    page.wait_for_function("document.querySelector('#messages').innerText.includes('<script>')", timeout=10000)
    assert page.evaluate("window.pwned === undefined")
