"""The chat page people choose, in Debian's Chromium against a live daphne server and the fake
upstream: a fresh chat at once, titles, attachments, the visible queue, approval scopes, the
memory panel's history, export and import, per-answer figures and the regenerate menu, the
gateway charts, and an axe-core check. The README's screenshots are taken here (docs/)."""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from agents_app.gateway.models import ModelPrice
from agents_app.storage.models import Session, ToolGrant
from agents_app.testing.fake_openai import Reply, ToolCallSpec
from tests.plugins.browser import log_in
from tests.plugins.live_server import start_live_server
from tests.test_browser_ui import answer_shown, refresh_memory_panel, send

T = TypeVar("T")
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]
DOCS = Path(__file__).resolve().parents[1] / "docs"
AXE = Path(__file__).resolve().parent / "node" / "node_modules" / "axe-core" / "axe.min.js"
# A 16×16 red square.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000010000000100802000000909168360000001649444154789c63b8232747126218d530"
    "aa61f86a00009a331810746bb5600000000049454e44ae426082"
)


def in_thread(query: Callable[[], T]) -> T:
    """The ORM from a Playwright test (its sync API runs an event loop in the test's thread)."""

    def run() -> T:
        try:
            return query()
        finally:
            connection.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()


def serious_axe_violations(page: Any) -> list[str]:
    """axe-core (from npm) run in the page: the rules broken at serious or critical impact."""
    page.add_script_tag(path=str(AXE))
    results = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [
        f"{v['id']}: {v['help']} ({len(v['nodes'])}× e.g. {v['nodes'][0]['target']})"
        for v in results["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def test_the_home_page_is_a_fresh_chat_ready_to_type_and_the_first_message_stores_it(live_server_process, user, browser, model):
    model.script(Reply.text("Hello! How can I help?"))
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    log_in(page, live_server_process.url)
    assert page.evaluate("document.activeElement.id") == "message"
    assert page.input_value("#agent-picker") == "chat-agent"
    assert "No conversations yet." in page.inner_text("#session-list")
    page.screenshot(path=str(DOCS / "chat-first-screen.png"))
    assert in_thread(Session.objects.count) == 0  # opening the page stored nothing
    page.keyboard.type("Hi there")
    with page.expect_navigation():  # onto the conversation the first message created
        page.keyboard.press("Enter")
    answer_shown(page, "Hello! How can I help?")
    assert "/chat/chat-agent/chat-" in page.url
    page.wait_for_selector("#session-list a:has-text('Hi there')")  # the title comes after the answer
    assert "Hi there" in page.inner_text("#session-list") and page.text_content("#session-list .session-group") == "Today"
    assert in_thread(Session.objects.count) == 1


def test_the_agent_picker_in_the_composer_starts_the_chat_with_the_chosen_agent(live_server_process, user, browser, model):
    model.script(Reply.text("I remember things."))
    page = browser.new_page()
    log_in(page, live_server_process.url)
    page.select_option("#agent-picker", "memory-assistant")
    send(page, "Who are you?")
    answer_shown(page, "I remember things.")
    assert "/chat/memory-assistant/" in page.url and page.locator("#memory-panel").count() == 1


@pytest.fixture
def titled_server(model: Any, transactional_db: Any) -> Iterator[Any]:
    server = start_live_server(model.base_url, {"AGENTS_CHAT_TITLES": "model"})
    yield server
    server.stop()


def test_a_new_chat_is_titled_by_the_model_after_its_first_answer_and_a_rename_stays(titled_server, user, browser, model):
    model.script(Reply.text("Lisbon in spring is lovely.", delay=0.05), Reply.text("Spring trip to Lisbon"), Reply.text("Pack light."))
    page = browser.new_page()
    log_in(page, titled_server.url)
    send(page, "Plan a trip to Lisbon in April")
    answer_shown(page, "Lisbon in spring is lovely.")
    page.wait_for_function("document.querySelector('#chat-title').innerText === 'Spring trip to Lisbon'", timeout=15000)
    page.wait_for_function("document.title.startsWith('Spring trip to Lisbon')")
    assert "Spring trip to Lisbon" in page.inner_text("#session-list")
    title_request = model.requests[1]
    assert "title" in title_request["messages"][0]["content"] and "Lisbon in spring is lovely." in title_request["messages"][1]["content"]
    entry = page.locator("#session-list li", has_text="Spring trip")
    entry.locator("summary").click()
    entry.locator("input[name=title]").fill("Lisbon")
    entry.locator("button", has_text="Rename").click()
    page.wait_for_selector("#session-list a:has-text('Lisbon')")
    send(page, "What should I pack?")
    answer_shown(page, "Pack light.")
    page.reload()
    assert page.inner_text("#chat-title") == "Lisbon" and len(model.requests) == 3  # no second title call


def test_an_image_and_a_text_file_reach_the_model_and_show_in_the_message(chat_page, model, tmp_path):
    model.script(Reply.text("Started."), Reply.text("A red square, and your notes say hello."))
    page = chat_page("files")
    send(page, "Start")
    answer_shown(page, "Started.")
    (tmp_path / "square.png").write_bytes(PNG)
    (tmp_path / "notes.md").write_text("# Notes\nhello\n")
    page.set_input_files("#files", [str(tmp_path / "square.png"), str(tmp_path / "notes.md")])
    assert "square.png" in page.inner_text("#chosen-files")
    send(page, "What is in these?")
    answer_shown(page, "A red square")
    content = model.requests[1]["messages"][-1]["content"]
    assert content[0]["type"] == "image_url" and content[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert "/uploads/notes.md" in content[1]["text"]
    page.wait_for_function("document.querySelector('#messages .message-user img') && document.querySelector('#messages .message-user img').naturalWidth === 16")
    link = page.locator("#messages a.file-download", has_text="notes.md")
    origin = page.url.split("/chat/")[0]
    assert page.request.get(origin + link.get_attribute("href")).text() == "# Notes\nhello\n"
    assert page.inner_text("#chosen-files") == ""  # the composer is empty again


def test_a_file_too_large_is_refused_with_a_clear_error_and_the_message_is_kept(chat_page, model, tmp_path):
    page = chat_page("too-big")
    (tmp_path / "huge.txt").write_text("x" * 1_100_000)
    page.set_input_files("#files", str(tmp_path / "huge.txt"))
    page.fill("#message", "Read this")
    page.keyboard.press("Enter")
    page.wait_for_selector("#errors .error")
    assert "huge.txt is 1.1 MB; files of this type are limited to 1 MB." in page.inner_text("#errors")
    assert page.input_value("#message") == "Read this" and in_thread(Session.objects.count) == 0


def test_messages_sent_during_an_answer_wait_as_queued_bubbles_that_can_be_edited_or_cancelled(chat_page, model, tmp_path):
    model.script(Reply.text("Started."), Reply.text(" ".join(f"w{i}" for i in range(80)), delay=0.25), Reply.text("About the second."))
    page = chat_page("queue", viewport={"width": 1280, "height": 900})
    send(page, "Start")
    answer_shown(page, "Started.")
    (tmp_path / "square.png").write_bytes(PNG)
    page.set_input_files("#files", str(tmp_path / "square.png"))
    send(page, "Describe this picture at length")
    page.wait_for_selector("#streaming-slot .message-assistant")
    send(page, "second question")
    page.wait_for_function("document.querySelectorAll('#queue .queued').length === 1")
    send(page, "third question")
    page.wait_for_function("document.querySelectorAll('#queue .queued').length === 2")
    page.screenshot(path=str(DOCS / "chat-attachment-and-queue.png"))
    first = page.locator("#queue .queued").nth(0)
    first.locator(".edit-queued summary").click()
    first.locator("textarea").fill("second question, edited")
    first.locator("button.save-queued").click()
    page.wait_for_function("document.querySelector('#queue').innerText.includes('second question, edited')")
    page.locator("#queue .queued", has_text="third question").locator("button.cancel-queued").click()
    page.wait_for_function("document.querySelectorAll('#queue .queued').length === 1")
    answer_shown(page, "About the second.", timeout=30000)
    page.wait_for_function("document.querySelectorAll('#queue .queued').length === 0")
    sent = [m["content"] for m in model.requests[2]["messages"] if m["role"] == "user"]
    assert sent[-1] == "second question, edited" and not any("third" in str(text) for text in sent)
    assert len(model.requests) == 3


def test_approval_scopes_always_for_this_agent_then_revoke_from_the_standing_approvals(chat_page, model, user):
    model.script(
        Reply.tool_calls([ToolCallSpec("deleteFile", '{"path": "/tmp/a"}', id="s1")]), Reply.text("Deleted a."),
        Reply.tool_calls([ToolCallSpec("deleteFile", '{"path": "/tmp/b"}', id="s2")]), Reply.text("Deleted b."),
        Reply.tool_calls([ToolCallSpec("deleteFile", '{"path": "/tmp/c"}', id="s3")]),
    )
    page = chat_page("scopes", viewport={"width": 1280, "height": 900})
    send(page, "Delete /tmp/a")
    page.wait_for_selector("button.approve-agent", timeout=10000)
    card = page.locator("[data-tool-call=s1] .approval")
    assert [b.strip() for b in card.locator("button").all_inner_texts()] == ["Approve once", "Always in this chat", "Always for this agent", "Deny"]
    card.screenshot(path=str(DOCS / "chat-approval-scopes.png"))
    page.click("button.approve-agent")
    answer_shown(page, "Deleted a.")
    assert in_thread(lambda: list(ToolGrant.objects.values_list("tool", flat=True))) == ["deleteFile"]
    other = chat_page("scopes-elsewhere")  # another chat with the same agent: no card
    send(other, "Delete /tmp/b")
    answer_shown(other, "Deleted b.")
    assert other.query_selector("button.approve") is None
    other.click("#approvals-panel summary")
    other.wait_for_selector("#approvals-panel[open] button.revoke")
    other.click("#approvals-panel button.revoke")
    other.wait_for_function("!document.querySelector('#approvals-panel').innerText.includes('deleteFile')")
    send(other, "Delete /tmp/c")
    other.wait_for_selector("[data-tool-call=s3] button.approve", timeout=10000)  # it asks again


def test_a_denial_with_a_reason_reaches_the_model(chat_page, model):
    model.script(Reply.tool_calls([ToolCallSpec("deleteFile", '{"path": "/home"}', id="d1")]), Reply.text("Understood, I will keep it."))
    page = chat_page("deny")
    send(page, "Delete /home")
    page.wait_for_selector("button.reject", timeout=10000)
    page.fill("[data-tool-call=d1] input[name=reason]", "That folder holds my photos")
    page.click("button.reject")
    answer_shown(page, "Understood, I will keep it.")
    tool_message = next(m for m in model.requests[1]["messages"] if m["role"] == "tool")
    assert tool_message["content"] == "Tool execution denied by user. Reason: That folder holds my photos"


def test_the_memory_panel_lists_every_write_and_the_owner_undoes_and_clears(chat_page, model):
    model.script(
        Reply.tool_calls([ToolCallSpec("set_context", json.dumps({"label": "memory", "content": "Name: Alice"}), id="m1")]),
        Reply.text("Hello Alice."),
        Reply.tool_calls([ToolCallSpec("set_context", json.dumps({"label": "memory", "content": "Lives in Oslo", "action": "append"}), id="m2")]),
        Reply.text("Oslo, noted."),
    )
    page = chat_page("memory-history", agent="memory-assistant", viewport={"width": 1280, "height": 1000})
    page.on("dialog", lambda dialog: dialog.accept())  # the clear confirmation
    send(page, "I am Alice")
    answer_shown(page, "Hello Alice.")
    send(page, "I live in Oslo")
    answer_shown(page, "Oslo, noted.")
    page.click("#memory-panel summary")
    refresh_memory_panel(page)
    page.wait_for_selector(".memory-block[data-label=memory] .memory-history")
    page.click(".memory-block[data-label=memory] .memory-history summary")
    writes = page.locator(".memory-block[data-label=memory] .memory-write")
    assert writes.count() == 2 and "by the assistant" in writes.nth(0).inner_text()
    assert "Name: Alice\nLives in Oslo" in writes.nth(0).inner_text()
    page.locator("#memory-panel").screenshot(path=str(DOCS / "memory-panel-history.png"))
    page.click(".memory-block[data-label=memory] button.undo-write")
    page.wait_for_function("document.querySelector('#memory-memory').value === 'Name: Alice'")
    page.click(".memory-block[data-label=memory] button.clear-block")
    page.wait_for_function("document.querySelector('#memory-memory').value === ''")


def test_a_conversation_exported_as_json_imports_as_a_new_one_with_its_branches(chat_page, model, tmp_path):
    model.script(Reply.text("First answer."), Reply.text("Second answer."))
    page = chat_page("to-export")
    send(page, "Question")
    answer_shown(page, "First answer.")
    page.click("button.regenerate")
    answer_shown(page, "Second answer.")
    with page.expect_download() as download:
        page.click("text=Export JSON")
    exported = tmp_path / "conversation.json"
    download.value.save_as(exported)
    page.set_input_files("#import-file", str(exported))
    page.wait_for_url(lambda url: "/chat/chat-agent/chat-" in url)
    answer_shown(page, "Second answer.")
    assert page.inner_text(".branch-position") == "2/2"
    page.click("button[aria-label='Previous version']")
    answer_shown(page, "First answer.")
    assert in_thread(Session.objects.count) == 2


def test_each_answer_shows_its_model_and_figures_and_can_be_regenerated_with_another_model(chat_page, model):
    in_thread(lambda: ModelPrice.objects.create(model="fake-model", input_per_million=1, output_per_million=2))
    in_thread(lambda: ModelPrice.objects.create(model="bigger-model", input_per_million=10, output_per_million=20))
    model.script(Reply.text("Small answer."), Reply.text("Bigger answer."))
    page = chat_page("models")
    send(page, "Question")
    answer_shown(page, "Small answer.")
    page.wait_for_selector("#messages .answer-stats")
    stats = page.inner_text("#messages .answer-stats")
    assert "Assistant · fake-model ·" in stats and "tokens in" in stats and "first token after" in stats
    page.select_option("#messages .regenerate-model", "bigger-model")
    page.click("button.regenerate")
    answer_shown(page, "Bigger answer.")
    assert model.requests[-1]["model"] == "bigger-model"
    page.wait_for_function("document.querySelector('#messages .answer-stats').innerText.includes('bigger-model')")


def test_the_gateway_dashboard_labels_a_few_days_and_shows_a_value_on_hover(live_server_process, browser, model):
    in_thread(lambda: get_user_model().objects.create_superuser("root", password="admin-pass-42"))
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{live_server_process.url}/admin/login/")
    page.fill("#id_username", "root")
    page.fill("#id_password", "admin-pass-42")
    page.click("input[type=submit]")
    page.goto(f"{live_server_process.url}/admin/gateway/modelcall/dashboard/")
    chart = page.locator(".gateway-chart", has_text="Requests per day")
    labels = [t for t in chart.locator("g.column .tick").all_text_contents() if t.strip()]
    assert 2 <= len(labels) <= 6
    value = chart.locator("g.column").nth(10).locator(".value")
    assert not value.is_visible()
    chart.locator("g.column").nth(10).hover()
    assert value.is_visible()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_axe_finds_no_serious_violations_on_the_chat_page(chat_page, model, scheme):
    model.script(Reply.text("Use **this**:\n\n```python\nprint('hi')\n```"), Reply.tool_calls([ToolCallSpec("deleteFile", '{"path": "/x"}', id="ax1")]))
    page = chat_page(f"axe-{scheme}", color_scheme=scheme)
    assert serious_axe_violations(page) == []  # the fresh chat
    send(page, "Show code")
    answer_shown(page, "print")
    send(page, "Delete /x")
    page.wait_for_selector("button.approve", timeout=10000)
    page.click("#approvals-panel summary")
    page.wait_for_selector("#approvals-panel[open] h2")
    assert serious_axe_violations(page) == []


def test_every_control_of_a_fresh_chat_is_reachable_by_keyboard(live_server_process, user, browser, model):
    page = browser.new_page()
    log_in(page, live_server_process.url)
    reached = set()
    for _ in range(25):
        page.keyboard.press("Tab")
        reached.add(page.evaluate("document.activeElement.id || document.activeElement.className || document.activeElement.tagName"))
    assert {"message", "files", "agent-picker", "session-search", "import-file"} <= reached
