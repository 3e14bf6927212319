"""The HTMX chat page in Debian's Chromium (Playwright), against a live daphne server and the
fake upstream. Screenshots of the main states go to test-artifacts/."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agents_app.testing.fake_openai import Reply, ToolCallSpec

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def send(page: Any, text: str) -> None:
    """Type and press Enter; the first message of a fresh chat loads the page onto the
    conversation it created, so that one waits for the page to load."""
    page.fill("#message", text)
    if page.locator("main.chat[ws-connect]").count():
        page.keyboard.press("Enter")
        return
    with page.expect_navigation():
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
    model.script(
        Reply.text("Removing it is **permanent**. The command would be:\n\n```bash\nrm -- /tmp/x\n```\n\nShall I delete it for you?", delay=0.02),
        Reply.tool_calls([ToolCallSpec("deleteFile", '{"path": "/tmp/x"}', id="del1")]),
        Reply.text("The file is gone."),
    )
    page = chat_page()
    send(page, "How do I delete /tmp/x?")
    page.wait_for_selector("#messages .message-assistant pre.highlight", timeout=15000)
    send(page, "Yes, delete /tmp/x")
    page.wait_for_selector("button.approve", timeout=10000)
    page.set_viewport_size({"width": 1280, "height": 900})
    page.wait_for_timeout(300)  # the page follows the conversation to its end
    assert page.locator("button.approve").is_visible()
    page.screenshot(path=str(ARTIFACTS / "chat-approval-pending.png"))
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
    model.script(Reply.text("The chat exists now."), Reply.text("Both tabs see this.", delay=0.05))
    first = chat_page("sync")
    send(first, "Start")  # a chat is stored, and can be opened twice, once it has a message
    answer_shown(first, "The chat exists now.")
    second = chat_page("sync")
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


def answer_shown(page: Any, text: str, timeout: float = 15000) -> None:
    page.wait_for_function(f"document.querySelector('#messages').innerText.includes({text!r})", timeout=timeout)


def refresh_memory_panel(page: Any) -> None:
    """Click the memory panel's Refresh and wait for its new panel. The page may already show
    what a test waits for (a turn can end before the page loads), and the new panel replaces
    the old one: anything done to the old one meanwhile is lost."""
    page.evaluate("document.querySelector('#memory-panel').dataset.beforeRefresh = 'yes'")
    page.click("#memory-panel button:has-text('Refresh')")
    page.wait_for_function("!document.querySelector('#memory-panel').dataset.beforeRefresh")


def accept_confirmations(page: Any) -> None:
    page.on("dialog", lambda dialog: dialog.accept())


def test_finished_answers_render_markdown_with_highlighted_code_and_esc_stops(chat_page, model):
    model.script(
        Reply.text("Use **this**:\n\n```python\ndef greet():\n    return 'hi'\n```\n"),
        Reply.text(" ".join(f"tick{i}" for i in range(60)), delay=0.15),
    )
    page = chat_page("markdown")
    send(page, "Show me code")
    page.wait_for_selector("#messages .message-assistant pre.highlight", timeout=15000)
    assert page.inner_text("#messages .message-assistant strong") == "this"
    assert page.inner_text("#messages .highlight .k") == "def"
    assert page.get_attribute("#streaming-slot", "aria-live") == "polite"
    page.screenshot(path=str(ARTIFACTS / "chat-markdown.png"), full_page=True)
    page.fill("#message", "first line")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("second line")
    assert page.input_value("#message") == "first line\nsecond line"  # Shift+Enter did not send
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('#streaming-slot').innerText.includes('tick3')", timeout=10000)
    page.keyboard.press("Escape")
    assert model.wait_for_disconnect(5)
    answer_shown(page, "tick0")
    assert "tick59" not in page.inner_text("#messages")


def test_always_allow_runs_later_calls_of_that_tool_without_a_card(chat_page, model):
    model.script(
        Reply.tool_calls([ToolCallSpec("deleteFile", '{"path": "/tmp/one"}', id="al1")]),
        Reply.text("Deleted one."),
        Reply.tool_calls([ToolCallSpec("deleteFile", '{"path": "/tmp/two"}', id="al2")]),
        Reply.text("Deleted two."),
    )
    page = chat_page("always")
    send(page, "Delete /tmp/one")
    page.wait_for_selector("button.approve", timeout=10000)
    page.click("button.approve-chat")
    answer_shown(page, "Deleted one.")
    send(page, "Delete /tmp/two")
    answer_shown(page, "Deleted two.")
    assert page.query_selector("button.approve") is None
    assert page.inner_text("[data-tool-call=al2] .tool-state") == "output-available"


def test_tool_cards_fold_and_show_arguments_output_and_errors(chat_page, model):
    model.script(
        Reply.tool_calls([ToolCallSpec("getWeather", '{"city": "Paris"}', id="w1"), ToolCallSpec("getWeather", '{"town": "Nowhere"}', id="w2")]),
        Reply.text("Paris is fine."),
    )
    page = chat_page("cards")
    send(page, "Weather?")
    answer_shown(page, "Paris is fine.")
    card = page.locator("[data-tool-call=w1]")
    assert card.locator(".tool-output").is_visible() is False  # folded by default
    card.locator("summary").click()
    assert '"city": "Paris"' in card.locator(".tool-input").inner_text()
    assert '"temperatureC"' in card.locator(".tool-output").inner_text()
    failed = page.locator("[data-tool-call=w2]")
    assert failed.locator(".tool-error").is_visible()  # errors are open and announced
    assert "city" in failed.locator(".tool-error").inner_text()


def test_browser_tools_answer_with_the_timezone_and_the_granted_location(chat_page, model):
    model.script(
        Reply.tool_calls([ToolCallSpec("get_timezone", "{}", id="tz1"), ToolCallSpec("get_location", "{}", id="geo1")]),
        Reply.text("You are in Tokyo."),
    )
    page = chat_page(
        "client-tools", timezone_id="Asia/Tokyo", geolocation={"latitude": 35.68, "longitude": 139.69}, permissions=["geolocation"]
    )
    send(page, "Where am I?")
    answer_shown(page, "You are in Tokyo.")
    tool_messages = {m["tool_call_id"]: m["content"] for m in model.requests[1]["messages"] if m["role"] == "tool"}
    assert json.loads(tool_messages["tz1"]) == {"timeZone": "Asia/Tokyo"}
    location = json.loads(tool_messages["geo1"])
    assert (location["latitude"], location["longitude"]) == (35.68, 139.69)


def test_a_refused_location_comes_back_as_a_clear_tool_error(chat_page, model):
    model.script(Reply.tool_calls([ToolCallSpec("get_location", "{}", id="geo2")]), Reply.text("I cannot see where you are."))
    page = chat_page("no-location")
    page.context.clear_permissions()
    send(page, "Where am I?")
    answer_shown(page, "I cannot see where you are.", timeout=25000)
    assert "did not allow access to their location" in page.inner_text("[data-tool-call=geo2] .tool-error")
    tool_message = next(m for m in model.requests[1]["messages"] if m["role"] == "tool")
    assert "did not allow access to their location" in tool_message["content"]


def test_editing_a_message_answers_anew_and_keeps_the_old_branch(chat_page, model):
    model.script(Reply.text("Paris is the capital."), Reply.text("Rome is the capital."))
    page = chat_page("edit")
    send(page, "Capital of France?")
    answer_shown(page, "Paris is the capital.")
    page.click("#messages .message-user .edit-message summary")
    page.fill("#messages .message-user .edit-form textarea", "Capital of Italy?")
    page.click("#messages .message-user button.save-edit")
    answer_shown(page, "Rome is the capital.")
    assert "Capital of Italy?" in page.inner_text("#messages .message-user")
    assert page.inner_text("#messages .message-user .branch-position") == "2/2"
    assert "Paris" not in page.inner_text("#messages")
    page.click("#messages .message-user button[aria-label='Previous version']")
    answer_shown(page, "Paris is the capital.")
    assert "Capital of France?" in page.inner_text("#messages .message-user")
    assert page.inner_text("#messages .message-user .branch-position") == "1/2"


def test_progress_updates_in_place_and_citations_are_links(chat_page, model):
    model.script(Reply.text("Ready."), Reply.tool_calls([ToolCallSpec("research", '{"topic": "Lisbon"}', id="r1")]), Reply.text("Lisbon is lovely."))
    page = chat_page("research")
    send(page, "Hello")  # the chat exists and its page is connected before the tool runs
    answer_shown(page, "Ready.")
    send(page, "Research Lisbon")
    page.wait_for_selector("#streaming-slot .part-progress progress", timeout=10000)
    values = set()
    for _ in range(12):
        bars = page.query_selector_all(".part-progress progress")
        values.update(bar.get_attribute("value") for bar in bars)
        assert len(bars) <= 1  # one bar, updated in place
        page.wait_for_timeout(100)
    answer_shown(page, "Lisbon is lovely.")
    assert len(values) >= 2
    assert page.get_attribute("#messages .part-progress progress", "value") == "100"
    links = page.locator("#messages .part-citation a")
    assert links.count() == 2
    assert links.first.get_attribute("href") == "https://en.wikipedia.org/wiki/Lisbon"


def test_sidebar_renames_searches_and_deletes_conversations(chat_page, model):
    model.script(Reply.text("Bananas are berries."), Reply.text("Tomatoes are fruit."))
    page = chat_page("bananas")
    accept_confirmations(page)
    send(page, "Tell me about bananas")
    answer_shown(page, "Bananas are berries.")
    page.goto(page.url.replace("/bananas/", "/tomatoes/"))
    page.wait_for_timeout(500)
    send(page, "And tomatoes?")
    answer_shown(page, "Tomatoes are fruit.")

    bananas = page.locator("#session-list li", has_text="bananas")
    bananas.locator("summary").click()
    bananas.locator("input[name=title]").fill("Fruit facts")
    bananas.locator("button", has_text="Rename").click()
    page.wait_for_selector("#session-list a:has-text('Fruit facts')")

    page.fill("#session-search", "berries")
    page.wait_for_function("document.querySelectorAll('#session-list li.session').length === 1")
    assert "Fruit facts" in page.inner_text("#session-list")
    page.fill("#session-search", "")
    page.wait_for_function("document.querySelectorAll('#session-list li.session').length === 2")

    page.locator("#session-list li", has_text="Fruit facts").locator("summary").click()
    page.locator("#session-list li", has_text="Fruit facts").locator("button.delete-session").click()
    page.wait_for_function("document.querySelectorAll('#session-list li.session').length === 1")
    assert "tomatoes" in page.inner_text("#session-list")
    page.locator("#session-list li", has_text="tomatoes").locator("summary").click()
    page.locator("#session-list li", has_text="tomatoes").locator("button.delete-session").click()
    page.wait_for_url(page.url.split("/chat/")[0] + "/")  # the open conversation is gone: back home
    assert "No conversations yet." in page.inner_text("#session-list")


def test_copy_export_and_clear_the_conversation(chat_page, model, tmp_path):
    model.script(Reply.text("Forty-two."))
    page = chat_page("tools-bar", permissions=["clipboard-read", "clipboard-write"])
    send(page, "The answer?")
    answer_shown(page, "Forty-two.")
    page.click("#messages .message-assistant button.copy")
    assert page.evaluate("navigator.clipboard.readText()") == "Forty-two."
    with page.expect_download() as markdown_download:
        page.click("text=Export Markdown")
    assert "## Assistant\n\nForty-two." in Path(markdown_download.value.path()).read_text()
    with page.expect_download() as json_download:
        page.click("text=Export JSON")
    assert json.loads(Path(json_download.value.path()).read_text())["messages"][0]["parts"][0]["text"] == "The answer?"
    accept_confirmations(page)
    page.click("#clear")
    page.wait_for_function("document.querySelector('#messages').children.length === 0")
    page.reload()
    assert page.query_selector("#messages .message") is None


def test_phone_width_keeps_the_composer_and_messages_usable_in_dark_mode(chat_page, model):
    model.script(Reply.text("Small screens work too. " * 6))
    page = chat_page("phone", viewport={"width": 390, "height": 844}, color_scheme="dark", is_mobile=True, has_touch=True)
    send(page, "Hello from a phone")
    answer_shown(page, "Small screens work too.")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing overflows sideways
    for selector in ("#message", "#composer button[type=submit]", "#messages .message-assistant"):
        box = page.locator(selector).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(21, 22, 26)"
    page.screenshot(path=str(ARTIFACTS / "chat-phone-dark.png"), full_page=True)


def test_light_mode_follows_the_system_preference(chat_page, model):
    page = chat_page("light", color_scheme="light")
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(255, 255, 255)"


def test_the_memory_panel_shows_what_the_assistant_stored_and_saves_the_owners_edits(chat_page, model):
    model.script(
        Reply.tool_calls([ToolCallSpec("set_context", json.dumps({"label": "memory", "content": "Name: Alice"}), id="mem1")]),
        Reply.text("Nice to meet you, Alice."),
        Reply.text("You live in Oslo."),
    )
    page = chat_page("memory", agent="memory-assistant")
    send(page, "I am Alice")
    answer_shown(page, "Nice to meet you, Alice.")
    page.click("#memory-panel summary")
    refresh_memory_panel(page)
    page.wait_for_function("document.querySelector('#memory-memory').value === 'Name: Alice'")
    assert "Warm, concise and honest." in page.inner_text(".memory-block[data-label=soul] pre")
    page.fill("#memory-memory", "Name: Alice\nLives in Oslo")
    page.click("text=Save memory")
    page.wait_for_function("document.querySelector('.memory-block[data-label=memory]').innerText.includes('7 of 400 tokens')")
    page.screenshot(path=str(ARTIFACTS / "memory-panel.png"))
    send(page, "Where do I live?")
    answer_shown(page, "You live in Oslo.")
    assert "Name: Alice\nLives in Oslo" in model.requests[-1]["messages"][0]["content"]


def test_a_turn_started_by_an_api_call_appears_live_on_the_open_page(token, chat_page, model, live_server_process):
    # `token` first: it is created before Playwright starts its event loop in this thread.
    import threading

    import httpx

    model.script(Reply.text("Hi."), Reply.text("Started from the API and streamed to the page while it was being written.", delay=0.2))
    page = chat_page("api-live")
    send(page, "Hello")  # the page is open on a stored conversation
    answer_shown(page, "Hi.")
    responses: list[httpx.Response] = []
    call = threading.Thread(target=lambda: responses.append(httpx.post(
        f"{live_server_process.url}/agents/chat-agent/api-live/chat?format=json",
        json={"text": "Hello from a script"}, headers={"Authorization": f"Bearer {token}"}, timeout=30,
    )))
    call.start()
    page.wait_for_function("document.querySelector('#streaming-slot').innerText.includes('Started from')", timeout=15000)
    assert call.is_alive(), "the page showed the answer only after the turn had ended"
    call.join()
    assert responses[0].status_code == 200
    answer_shown(page, "Hello from a script")
    answer_shown(page, "while it was being written.")
