"""The chat UI's HTTP side without a browser: safe markdown, part rendering, the sidebar
(search, rename, delete), clear and export — and that nobody reaches another user's session."""
from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest
from django.test import Client

from agents_app.turns.instances import resolve_session
from agents_app.storage import client_messages, transcript
from agents_app.storage.models import ContextBlock, Message, Session
from agents_app.ui.markdown import render_markdown
from agents_app.ui.rendering import render_message_html
from tests.conftest import user_message

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends]


def assistant(text: str, message_id: str = "a1") -> dict:
    return {"id": message_id, "role": "assistant", "parts": [{"type": "text", "text": text, "state": "done"}]}


def conversation(user, name: str, *texts: str, title: str = "") -> Session:
    session = resolve_session("chat-agent", name, user)
    if title:
        Session.objects.filter(pk=session.pk).update(title=title)
    messages = []
    for index, text in enumerate(texts):
        messages.append(user_message(text, f"{name}-u{index}") if index % 2 == 0 else assistant(text, f"{name}-a{index}"))
    client_messages.upsert(session, messages, move_leaf=True)
    return session


@pytest.fixture
def browser_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


class ElementCollector(HTMLParser):
    """The elements and attributes a browser would build from the HTML."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, attrs))


# -- markdown ---------------------------------------------------------------------------
def test_markdown_renders_formatting_links_and_highlighted_code():
    html = render_markdown("**bold** and [docs](https://example.org)\n\n```python\ndef f():\n    return 1\n```")
    assert "<strong>bold</strong>" in html
    assert '<a href="https://example.org" rel="noopener noreferrer nofollow">docs</a>' in html
    assert '<pre class="highlight"><code class="language-python"><span class="k">def</span>' in html


@pytest.mark.parametrize(
    "source",
    [
        "<script>alert(1)</script>",
        '<img src=x onerror="alert(1)">',
        "[click](javascript:alert(1))",
        '```x" onmouseover="alert(1)\ncode\n```',
        "<a href='javascript:alert(1)'>x</a>",
    ],
)
def test_markdown_never_lets_script_through(source):
    elements = ElementCollector()
    elements.feed(render_markdown(source))
    assert not {"script", "img"} & {tag for tag, _ in elements.found}
    attributes = [(name, value or "") for _, attrs in elements.found for name, value in attrs]
    assert not [name for name, _ in attributes if name.startswith("on")]
    assert not [value for name, value in attributes if name == "href" and not value.startswith(("https:", "http:"))]


def test_finished_assistant_text_is_markdown_while_streaming_text_and_user_text_stay_plain():
    done = render_message_html({"id": "m1", "role": "assistant", "parts": [{"type": "text", "text": "**hi**", "state": "done"}]})
    streaming = render_message_html({"id": "m2", "role": "assistant", "parts": [{"type": "text", "text": "**hi**", "state": "streaming"}]}, actions=False)
    typed = render_message_html(user_message("**hi** <b>x</b>", "m3"))
    assert "<strong>hi</strong>" in done
    assert "**hi**" in streaming and "<strong>" not in streaming
    assert "**hi** &lt;b&gt;x&lt;/b&gt;" in typed


def test_progress_data_parts_and_source_urls_render_as_a_bar_and_links():
    html = render_message_html(
        {
            "id": "m1",
            "role": "assistant",
            "parts": [
                {"type": "data-progress", "id": "p", "data": {"status": "Reading sources", "percent": 66}},
                {"type": "source-url", "sourceId": "s1", "url": "https://example.org/paper", "title": "The paper"},
                {"type": "source-url", "sourceId": "s2", "url": "javascript:alert(1)", "title": "Bad"},
                {"type": "data-citation", "data": {"url": "https://example.com", "title": "Cited"}},
            ],
        }
    )
    assert '<progress max="100" value="66">' in html and "Reading sources" in html
    assert '<a href="https://example.org/paper" rel="noopener noreferrer nofollow" target="_blank">The paper</a>' in html
    assert "javascript:" not in html and "Bad" not in html
    assert 'href="https://example.com"' in html and "Cited" in html


def test_a_failed_tool_card_is_open_and_shows_its_error():
    html = render_message_html(
        {"id": "m1", "role": "assistant", "parts": [{"type": "tool-getWeather", "toolCallId": "c1", "state": "output-error", "input": {"city": "X"}, "errorText": "Upstream down"}]}
    )
    assert 'class="part-tool tool-output-error" data-tool-call="c1" open' in html
    assert "Upstream down" in html and "&quot;city&quot;: &quot;X&quot;" in html


# -- sidebar ------------------------------------------------------------------------------
def test_search_finds_sessions_by_title_and_by_message_text_and_only_the_users_own(browser_client, user, other_user):
    conversation(user, "trip", "Plan a trip to Lisbon", "Sure.", title="Holidays")
    conversation(user, "code", "Fix my regex", "Use a raw string.")
    conversation(other_user, "secret", "Lisbon is where Bob hides")
    by_text = browser_client.get("/chat/search/", {"q": "lisbon"}).content.decode()
    assert "Holidays" in by_text and "code" not in by_text and "secret" not in by_text
    by_answer = browser_client.get("/chat/search/", {"q": "RAW STRING"}).content.decode()
    assert "/chat/chat-agent/code/" in by_answer and "Holidays" not in by_answer
    assert "No conversation matches" in browser_client.get("/chat/search/", {"q": "nothing like this"}).content.decode()


def test_renaming_a_session_changes_its_title_in_the_list(browser_client, user):
    conversation(user, "rename-me", "Hello")
    response = browser_client.post("/chat/chat-agent/rename-me/rename/", {"title": "  Weekend plans "})
    assert response.status_code == 200 and "Weekend plans" in response.content.decode()
    assert Session.objects.get(name="rename-me").title == "Weekend plans"


def test_deleting_a_session_removes_it_with_its_messages(browser_client, user):
    session = conversation(user, "doomed", "Hello", "Hi there")
    kept = conversation(user, "kept", "Stay")
    response = browser_client.post("/chat/chat-agent/doomed/delete/", {"current": str(kept.pk)})
    assert response.status_code == 200 and "doomed" not in response.content.decode() and "kept" in response.content.decode()
    assert not Session.objects.filter(pk=session.pk).exists()
    assert not Message.objects.filter(session_id=session.pk).exists()


def test_deleting_the_open_session_sends_the_page_home(browser_client, user):
    session = conversation(user, "open-one", "Hello")
    response = browser_client.post("/chat/chat-agent/open-one/delete/", {"current": str(session.pk)})
    assert response.headers["HX-Redirect"] == "/"


def test_clearing_a_conversation_deletes_its_messages_but_keeps_the_session(browser_client, user):
    session = conversation(user, "clear-me", "Hello", "Hi")
    assert browser_client.post("/chat/chat-agent/clear-me/clear/").status_code == 204
    assert Session.objects.filter(pk=session.pk).exists()
    assert transcript.transcript(session) == []


# -- export -------------------------------------------------------------------------------
def test_export_as_markdown_is_a_readable_download(browser_client, user):
    conversation(user, "exported", "What is **2+2**?", "It is 4.", title="Arithmetic")
    response = browser_client.get("/chat/chat-agent/exported/export.md")
    assert response["Content-Type"] == "text/markdown; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="arithmetic.md"'
    assert response.content.decode() == (
        "# Arithmetic\n\nAgent: chat-agent\n\n## User\n\nWhat is **2+2**?\n\n## Assistant\n\nIt is 4.\n"
    )


def test_export_as_json_carries_the_messages(browser_client, user):
    conversation(user, "as-json", "Hello", "Hi")
    document = json.loads(browser_client.get("/chat/chat-agent/as-json/export.json").content)
    assert document["agent"] == "chat-agent" and document["name"] == "as-json"
    assert [(m["role"], m["parts"][0]["text"]) for m in document["messages"]] == [("user", "Hello"), ("assistant", "Hi")]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/chat/chat-agent/alices/export.md"),
        ("get", "/chat/chat-agent/alices/export.json"),
        ("post", "/chat/chat-agent/alices/rename/"),
        ("post", "/chat/chat-agent/alices/delete/"),
        ("post", "/chat/chat-agent/alices/clear/"),
    ],
)
def test_another_user_never_reaches_a_session_that_is_not_theirs(user, other_user, method, path):
    session = conversation(user, "alices", "My private question", "My private answer", title="Private")
    intruder = Client()
    intruder.force_login(other_user)
    response = getattr(intruder, method)(path, {"title": "pwned"} if method == "post" else {})
    assert response.status_code == 404
    assert b"private" not in response.content.lower()
    session.refresh_from_db()
    assert session.title == "Private"
    assert [m["parts"][0]["text"] for m in transcript.transcript(session)] == ["My private question", "My private answer"]


def test_pages_need_a_login():
    response = Client().get("/chat/chat-agent/anything/export.json")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_the_memory_panel_saves_a_block_and_refuses_one_over_its_limit(browser_client, user):
    session = resolve_session("memory-assistant", "panel", user)
    page = browser_client.get("/chat/memory-assistant/panel/").content.decode()
    assert 'id="memory-panel"' in page and "Warm, concise and honest." in page
    saved = browser_client.post("/chat/memory-assistant/panel/memory/memory/", {"content": "Likes tea"}).content.decode()
    assert "Likes tea" in saved and ContextBlock.objects.get(session=session, label="memory").content == "Likes tea"
    refused = browser_client.post("/chat/memory-assistant/panel/memory/memory/", {"content": "word " * 400}).content.decode()
    assert 'exceeds maxTokens' in refused and ContextBlock.objects.get(session=session, label="memory").content == "Likes tea"
    assert 'Block &quot;soul&quot; is read-only.' in browser_client.post("/chat/memory-assistant/panel/memory/soul/", {"content": "x"}).content.decode()


def test_another_users_memory_panel_is_not_found(browser_client, other_user):
    resolve_session("memory-assistant", "theirs", other_user)
    assert browser_client.get("/chat/memory-assistant/theirs/memory/").status_code == 404
    assert browser_client.post("/chat/memory-assistant/theirs/memory/memory/", {"content": "x"}).status_code == 404


def test_agents_without_context_blocks_have_no_memory_panel(browser_client, user):
    assert 'id="memory-panel"' not in browser_client.get("/chat/chat-agent/plain/").content.decode()


def test_a_message_covered_by_a_compaction_is_marked_summarised():
    covered = {"id": "m1", "role": "user", "parts": [{"type": "text", "text": "old news"}], "metadata": {"compaction": {"id": 3}}}
    plain = {"id": "m2", "role": "user", "parts": [{"type": "text", "text": "fresh"}]}
    assert "summarised" in render_message_html(covered) and "summarised" not in render_message_html(plain)
