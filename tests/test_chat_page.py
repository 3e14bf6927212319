"""The chat page's HTTP side without a browser: fresh chats store nothing, attachment limits
and owner-only downloads, the queue, standing approvals, the memory panel's history, undo
and clear, whole-tree export and import, per-answer figures, titles, and sparse chart axes."""
from __future__ import annotations

import base64
import io
import json
import re
from datetime import date, timedelta
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from agents_app.gateway.dashboard import bar_chart, label_step
from agents_app.gateway.models import ModelCall, ModelPrice
from agents_app.providers.convert import to_openai_messages
from agents_app.turns.instances import resolve_session
from agents_app.storage import client_messages, transcript
from agents_app.storage.models import Agent, ContextBlock, Message, Session, ToolGrant, Turn
from agents_app.storage.workspace import Workspace
from agents_app.ui import attachments, export, sending, titles
from agents_app.ui.models import Attachment, QueuedMessage
from agents_app.ui.sidebar import date_label
from tests.conftest import user_message

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends]
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000")


@pytest.fixture
def browser_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def answered(user, name: str, *, agent: str = "chat-agent") -> Session:
    session = resolve_session(agent, name, user)
    client_messages.upsert(
        session,
        [user_message("Question", f"{name}-q"), {"id": f"{name}-a", "role": "assistant", "parts": [{"type": "text", "text": "Answer"}]}],
        move_leaf=True,
    )
    return session


# -- a fresh chat ---------------------------------------------------------------------------
def test_the_home_page_is_a_fresh_chat_with_the_default_agent_and_stores_nothing(browser_client):
    page = browser_client.get("/").content.decode()
    assert 'id="message"' in page and "autofocus" in page
    assert re.search(r'<option value="chat-agent" selected>', page)
    assert "ws-connect" not in page  # nothing to stream yet
    assert Session.objects.count() == 0


def test_opening_an_unknown_chat_by_url_stores_nothing(browser_client):
    assert browser_client.get("/chat/chat-agent/never-sent/").status_code == 200
    assert browser_client.get("/chat/no-such-agent/x/").status_code == 404
    assert Session.objects.count() == 0


def test_empty_sessions_are_not_listed_in_the_sidebar(browser_client, user):
    resolve_session("chat-agent", "empty", user)
    answered(user, "talked")
    page = browser_client.get("/").content.decode()
    assert "talked" in page and "/chat/chat-agent/empty/" not in page


def test_conversations_are_grouped_by_the_day_of_their_last_message():
    today = date(2026, 12, 1)
    labels = [date_label(today - timedelta(days=n), today) for n in (0, 1, 2, 6, 7, 30)]
    assert labels == ["Today", "Yesterday", "Previous 7 days", "Previous 7 days", "Older", "Older"]


def test_a_message_that_cannot_be_sent_leaves_no_conversation_behind(browser_client):
    response = browser_client.post("/chat/send/", {"agent": "chat-agent", "name": "fresh", "message": "hi", "files": [SimpleUploadedFile("a.exe", b"MZ", "application/x-msdownload")]})
    assert "cannot be attached" in response.content.decode()
    assert Session.objects.count() == 0


# -- titles ---------------------------------------------------------------------------------
def test_a_fallback_title_is_the_first_words_of_the_first_message():
    assert titles.first_words("Plan a three day trip to Lisbon in May please") == "Plan a three day trip to…"
    assert titles.clean_title('Title: "Trip to Lisbon."\n') == "Trip to Lisbon"


async def test_the_first_answer_titles_an_untitled_conversation_and_a_rename_stays(user):
    from asgiref.sync import sync_to_async

    session = await sync_to_async(answered)(user, "to-title")
    assert await titles.name_conversation(session.pk, "r1") == "Question"
    await sync_to_async(Session.objects.filter(pk=session.pk).update)(title="My own name")
    assert await titles.name_conversation(session.pk, "r2") is None
    assert (await sync_to_async(Session.objects.get)(pk=session.pk)).title == "My own name"


# -- attachments ----------------------------------------------------------------------------
def test_files_over_the_limit_or_of_an_unknown_type_are_refused_with_a_clear_error():
    limits = attachments.Limits(max_files=2, max_image_bytes=10, max_file_bytes=20)
    with pytest.raises(attachments.AttachmentError, match="limited to"):
        attachments.check([SimpleUploadedFile("big.png", b"x" * 11, "image/png")], limits)
    with pytest.raises(attachments.AttachmentError, match="cannot be attached"):
        attachments.check([SimpleUploadedFile("tool.exe", b"MZ", "application/octet-stream")], limits)
    with pytest.raises(attachments.AttachmentError, match="at most 2 files"):
        attachments.check([SimpleUploadedFile(f"{n}.txt", b"a", "text/plain") for n in range(3)], limits)


def test_images_reach_the_model_as_image_parts_and_text_files_through_the_workspace(user):
    session = resolve_session("chat-agent", "files", user)
    parts = attachments.store(session, [SimpleUploadedFile("dot.png", PNG, "image/png"), SimpleUploadedFile("notes.py", b"print('hi')\n", "text/x-python")])
    content = to_openai_messages([{"id": "u", "role": "user", "parts": [*parts, {"type": "text", "text": "Look"}]}])[0]["content"]
    assert content[0] == {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(PNG).decode()}}
    assert "/uploads/notes.py" in content[1]["text"] and content[2] == {"type": "text", "text": "Look"}
    assert Workspace(session).read_text("/uploads/notes.py") == "print('hi')\n"


def test_an_attachment_is_downloadable_by_its_owner_only(browser_client, user, other_user):
    session = resolve_session("chat-agent", "mine", user)
    part = attachments.store(session, [SimpleUploadedFile("notes.txt", b"secret notes", "text/plain")])[0]
    response = browser_client.get(part["url"])
    assert response.status_code == 200 and response.content == b"secret notes"
    assert response["Content-Disposition"].startswith("attachment")
    intruder = Client()
    intruder.force_login(other_user)
    assert intruder.get(part["url"]).status_code == 404


def test_a_pdf_goes_into_the_workspace_as_its_text(user):
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=72, height=72)
    buffer = io.BytesIO()
    writer.write(buffer)
    session = resolve_session("chat-agent", "pdf", user)
    part = attachments.store(session, [SimpleUploadedFile("report.pdf", buffer.getvalue(), "application/pdf")])[0]
    assert part["providerMetadata"]["agents"]["workspacePath"] == "/uploads/report.pdf.txt"
    assert bytes(Attachment.objects.get(session=session).data) == buffer.getvalue()  # the original, for downloads


# -- the queue -------------------------------------------------------------------------------
def test_a_queued_message_can_be_edited_or_cancelled_until_it_is_sent(browser_client, user):
    session = answered(user, "queue")
    first = QueuedMessage.objects.create(session=session, text="first")
    second = QueuedMessage.objects.create(session=session, text="second")
    browser_client.post(f"/chat/chat-agent/queue/queue/{first.pk}/edit/", {"message": "first, edited"})
    browser_client.post(f"/chat/chat-agent/queue/queue/{second.pk}/cancel/")
    assert list(QueuedMessage.objects.values_list("text", flat=True)) == ["first, edited"]
    gone = browser_client.post(f"/chat/chat-agent/queue/queue/{second.pk}/edit/", {"message": "too late"})
    assert "already been sent" in gone.content.decode()


@pytest.mark.parametrize(
    ("strategy", "sent_text", "left"),
    [
        ("queue", "first", ["second", "third"]),
        ("latest", "third", []),
        ("debounce", "third", []),
        ("merge", "first\n\nsecond\n\nthird", []),
    ],
)
def test_the_queue_is_released_the_way_the_agents_strategy_treats_overlapping_messages(user, strategy, sent_text, left):
    session = answered(user, f"release-{strategy}")
    Agent.objects.filter(pk=session.agent_id).update(settings={"message_concurrency": strategy})
    for text in ("first", "second", "third"):
        QueuedMessage.objects.create(session=session, text=text)
    released = sending._claim(Session.objects.get(pk=session.pk))
    assert released is not None
    assert released["parts"] == [{"type": "text", "text": sent_text}]
    assert list(QueuedMessage.objects.filter(session=session).order_by("id").values_list("text", flat=True)) == left


def test_an_agent_that_drops_overlapping_messages_refuses_one_sent_while_others_wait(user):
    session = answered(user, "release-drop")
    Agent.objects.filter(pk=session.agent_id).update(settings={"message_concurrency": "drop"})
    QueuedMessage.objects.create(session=session, text="waiting")
    with pytest.raises(sending.SendRefused, match="ignores messages sent meanwhile"):
        async_to_sync(sending.send)(Session.objects.get(pk=session.pk), "one more", [])
    assert list(QueuedMessage.objects.filter(session=session).values_list("text", flat=True)) == ["waiting"]


def test_another_user_cannot_touch_a_queued_message(user, other_user):
    session = answered(user, "queue-private")
    queued = QueuedMessage.objects.create(session=session, text="mine")
    intruder = Client()
    intruder.force_login(other_user)
    assert intruder.post(f"/chat/chat-agent/queue-private/queue/{queued.pk}/cancel/").status_code == 404
    assert QueuedMessage.objects.filter(pk=queued.pk).exists()


# -- approvals -------------------------------------------------------------------------------
def test_a_denial_reason_reaches_the_model_with_the_denial():
    part = {"type": "tool-deleteFile", "toolCallId": "c1", "state": "output-denied", "input": {}, "approval": {"id": "c1", "approved": False, "reason": "Keep my files"}}
    converted = to_openai_messages([{"id": "a", "role": "assistant", "parts": [part]}])
    assert converted[1] == {"role": "tool", "tool_call_id": "c1", "content": "Tool execution denied by user. Reason: Keep my files"}


def test_standing_approvals_are_listed_and_revoked_per_chat_and_per_agent(browser_client, user):
    session = answered(user, "grants")
    Session.objects.filter(pk=session.pk).update(allowed_tools=["deleteFile"])
    ToolGrant.objects.create(user=user, agent="chat-agent", tool="research")
    panel = browser_client.get("/chat/chat-agent/grants/approvals/").content.decode()
    assert "deleteFile" in panel and "research" in panel
    browser_client.post("/chat/chat-agent/grants/approvals/chat/deleteFile/revoke/")
    browser_client.post("/chat/chat-agent/grants/approvals/agent/research/revoke/")
    assert Session.objects.get(pk=session.pk).allowed_tools == [] and not ToolGrant.objects.exists()


# -- memory ----------------------------------------------------------------------------------
def test_the_memory_panel_shows_each_write_and_the_owner_can_undo_and_clear(browser_client, user):
    resolve_session("memory-assistant", "history", user)
    browser_client.post("/chat/memory-assistant/history/memory/memory/", {"content": "Likes tea"})
    browser_client.post("/chat/memory-assistant/history/memory/memory/", {"content": "Likes coffee"})
    panel = browser_client.get("/chat/memory-assistant/history/memory/").content.decode()
    assert "History (2 writes)" in panel and panel.index("Likes coffee") < panel.index("Likes tea")
    browser_client.post("/chat/memory-assistant/history/memory/memory/undo/")
    assert ContextBlock.objects.get(label="memory").content == "Likes tea"
    browser_client.post("/chat/memory-assistant/history/memory/memory/clear/")
    assert ContextBlock.objects.get(label="memory").content == ""
    refused = browser_client.post("/chat/memory-assistant/history/memory/soul/undo/").content.decode()
    assert "nothing to undo" in refused


# -- export and import -----------------------------------------------------------------------
def branched(user) -> Session:
    session = answered(user, "tree")
    transcript.save_message(session, {"id": "tree-a2", "role": "assistant", "parts": [{"type": "text", "text": "Another answer"}]}, parent_uid="tree-q")
    transcript.switch_branch(session, "tree-a")
    return session


def test_the_json_export_holds_every_branch_and_imports_as_an_identical_tree(browser_client, user):
    session = branched(user)
    Session.objects.filter(pk=session.pk).update(title="Two answers")
    exported = browser_client.get("/chat/chat-agent/tree/export.json").content
    document = json.loads(exported)
    assert {m["id"] for m in document["messages"]} == {"tree-q", "tree-a", "tree-a2"} and document["activeLeaf"] == "tree-a"
    response = browser_client.post("/chat/import/", {"conversation": SimpleUploadedFile("tree.json", exported, "application/json")})
    imported = Session.objects.exclude(pk=session.pk).get()
    assert response["HX-Redirect"] == f"/chat/chat-agent/{imported.name}/" and imported.owner == user
    again = json.loads(export.as_json(imported))
    assert {k: v for k, v in again.items() if k != "name"} == {k: v for k, v in document.items() if k != "name"}


def test_the_markdown_export_is_the_conversation_as_shown(browser_client, user):
    branched(user)
    markdown = browser_client.get("/chat/chat-agent/tree/export.md").content.decode()
    assert "Answer" in markdown and "Another answer" not in markdown


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"not json", "not JSON"),
        (b'{"format": "something-else"}', "not a conversation exported"),
        (json.dumps({"format": "agents-conversation", "version": 1, "agent": "chat-agent", "messages": [{"id": "a", "role": "user", "parts": [], "parentId": "missing"}]}).encode(), "damaged"),
        (json.dumps({"format": "agents-conversation", "version": 1, "agent": "chat-agent", "messages": [{"id": "a", "role": "robot", "parts": []}]}).encode(), "damaged"),
        (json.dumps({"format": "agents-conversation", "version": 1, "agent": "nobody", "messages": [{"id": "a", "role": "user", "parts": []}]}).encode(), "no agent"),
    ],
)
def test_an_invalid_conversation_file_is_refused_and_stores_nothing(browser_client, content, error):
    response = browser_client.post("/chat/import/", {"conversation": SimpleUploadedFile("bad.json", content, "application/json")})
    assert error in response.content.decode()
    assert Session.objects.count() == 0 and Message.objects.count() == 0


def test_an_oversized_conversation_file_is_refused(browser_client, settings):
    settings.AGENTS_IMPORT_MAX_BYTES = 100
    response = browser_client.post("/chat/import/", {"conversation": SimpleUploadedFile("big.json", b" " * 101, "application/json")})
    assert "limited to 100 bytes" in response.content.decode() and Session.objects.count() == 0


# -- per-answer figures ----------------------------------------------------------------------
def test_each_answer_shows_its_model_tokens_cost_and_time_to_first_token(browser_client, user):
    session = answered(user, "figures")
    Turn.objects.create(session=session, request_id="r1", status="completed", message_uid="figures-a")
    ModelCall.objects.create(session_id=session.pk, request_id="r1", model="gpt-x", input_tokens=120, output_tokens=30, cost=Decimal("0.0042"), ttft_ms=310)
    ModelCall.objects.create(session_id=session.pk, request_id="title-r1", model="gpt-x", input_tokens=999)  # the title's call is not the answer's
    page = browser_client.get("/chat/chat-agent/figures/").content.decode()
    assert "gpt-x · 120 tokens in, 30 out · $0.0042 · first token after 310 ms" in page


def test_the_regenerate_menu_offers_the_models_the_gateway_knows(browser_client, user):
    answered(user, "menu")
    ModelPrice.objects.create(model="bigger-model")
    page = browser_client.get("/chat/chat-agent/menu/").content.decode()
    assert '<option value="bigger-model">with bigger-model</option>' in page


# -- admin charts ----------------------------------------------------------------------------
def test_a_thirty_day_chart_labels_a_few_days_and_keeps_every_value_for_hover():
    points = [(f"11-{day:02d}", float(day)) for day in range(1, 31)]
    svg = bar_chart("Requests per day", points)
    labels = [t for t in re.findall(r'class="tick">([^<]*)</text>', svg) if t]
    assert 2 <= len(labels) - 1 <= 6  # the first tick is the scale's top value
    assert len(re.findall(r'class="value">', svg)) == 30 and "<title>11-17: 17</title>" in svg
    assert label_step(30) == 5 and label_step(4) == 1
