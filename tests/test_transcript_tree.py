"""The message tree: the conversation is the path root → active leaf (protocol §11)."""
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.contrib.auth import get_user_model
from django.db import OperationalError, connection, transaction

from agents_app.turns.instances import resolve_session
from agents_app.storage import client_messages, transcript
from agents_app.storage.models import Session
from tests.conftest import user_message


def assistant(message_id: str, text: str) -> dict:
    return {"id": message_id, "role": "assistant", "parts": [{"type": "text", "text": text}]}


@pytest.fixture
def session(user):
    return resolve_session("chat-agent", "tree", user)


def ids(session) -> list[str]:
    return [m["id"] for m in transcript.transcript(session)]


def test_messages_appended_in_order_form_the_active_path(session):
    client_messages.upsert(session, [user_message("hi", "u1")], move_leaf=True)
    transcript.save_message(session, assistant("a1", "hello"))
    client_messages.upsert(session, [user_message("hi", "u1"), assistant("a1", "hello"), user_message("more", "u2")], move_leaf=True)
    assert ids(session) == ["u1", "a1", "u2"]


def test_a_truncated_list_of_known_ids_moves_the_leaf_and_keeps_the_old_branch(session):
    client_messages.upsert(session, [user_message("hi", "u1")], move_leaf=True)
    transcript.save_message(session, assistant("a1", "first answer"))
    client_messages.upsert(session, [user_message("hi", "u1")], move_leaf=True)
    transcript.save_message(session, assistant("a2", "second answer"))
    assert ids(session) == ["u1", "a2"]
    assert session.messages.filter(uid="a1").exists()
    assert sorted(session.messages.get(uid="u1").children.values_list("uid", flat=True)) == ["a1", "a2"]


def test_set_messages_never_deletes_or_moves_the_leaf(session):
    client_messages.upsert(session, [user_message("hi", "u1")], move_leaf=True)
    transcript.save_message(session, assistant("a1", "answer"))
    client_messages.upsert(session, [user_message("hi", "u1")], move_leaf=False)
    assert ids(session) == ["u1", "a1"]


def test_server_tool_results_win_over_a_stale_client_copy(session):
    settled = {"id": "a1", "role": "assistant", "parts": [{"type": "tool-t", "toolCallId": "c1", "state": "output-available", "input": {}, "output": 42}]}
    client_messages.upsert(session, [user_message("hi", "u1")], move_leaf=True)
    transcript.save_message(session, settled)
    stale = {"id": "a1", "role": "assistant", "parts": [{"type": "tool-t", "toolCallId": "c1", "state": "input-available", "input": {}}]}
    client_messages.upsert(session, [user_message("hi", "u1"), stale], move_leaf=False)
    assert transcript.transcript(session)[1]["parts"][0]["output"] == 42


def test_identical_assistant_content_under_a_client_id_adopts_the_stored_id(session):
    client_messages.upsert(session, [user_message("hi", "u1")], move_leaf=True)
    transcript.save_message(session, assistant("server-id", "same words"))
    client_messages.upsert(session, [user_message("hi", "u1"), assistant("client-id", "same words")], move_leaf=False)
    assert ids(session) == ["u1", "server-id"]
    assert not session.messages.filter(uid="client-id").exists()


def test_sessions_are_separate_per_owner(user, other_user):
    mine = resolve_session("chat-agent", "default", user)
    theirs = resolve_session("chat-agent", "default", other_user)
    assert mine.pk != theirs.pk


@pytest.mark.parametrize("succeeded", [True, False])
def test_a_successful_reply_clears_the_sessions_last_failure_and_a_partial_one_keeps_it(session, succeeded):
    from agents_app.storage.models import Session

    client_messages.upsert(session, [user_message("hi", "u1")], move_leaf=True)
    Session.objects.filter(pk=session.pk).update(terminal={"requestId": "r0", "body": "The model failed."})
    transcript.save_reply(session, assistant("a1", "hello"), "u1", clear_terminal=succeeded)
    session.refresh_from_db()
    assert ids(session) == ["u1", "a1"]
    assert session.terminal == (None if succeeded else {"requestId": "r0", "body": "The model failed."})


def _admitted(session, messages: list[dict], request_id: str) -> client_messages.AdmittedMessages:
    admitted = client_messages.admit(session, messages, lock_for=request_id)
    session.refresh_from_db()
    session.turn_lock = ""  # the turn ended: the next request may take the lock
    session.save(update_fields=["turn_lock"])
    return admitted


def test_the_transcript_an_admission_gives_its_turn_is_the_one_a_read_shows(session):
    """Every shape a chat request leaves the tree in: a first message, a continued
    conversation, a regenerate (an answer with a sibling), a message after that branch."""
    first = _admitted(session, [user_message("hi", "u1")], "r1")
    assert first.holds_lock and first.transcript == transcript.transcript(session)
    transcript.save_message(session, assistant("a1", "first answer"))
    regenerate = _admitted(session, [user_message("hi", "u1")], "r2")
    assert regenerate.transcript == transcript.transcript(session)
    transcript.save_message(session, assistant("a2", "second answer"))
    history = [user_message("hi", "u1"), assistant("a2", "second answer")]
    continued = _admitted(session, [*history, user_message("and then?", "u2")], "r3")
    assert continued.transcript == transcript.transcript(session)
    assert continued.transcript[1]["metadata"]["branch"] == {"index": 1, "count": 2, "siblings": ["a1", "a2"]}
    assert [m["id"] for m in continued.transcript] == ["u1", "a2", "u2"]


def test_an_admission_takes_no_lock_another_request_holds_and_gives_no_transcript_then(session):
    client_messages.admit(session, [user_message("hi", "u1")], lock_for="r1")
    second = client_messages.admit(session, [user_message("hi", "u1"), user_message("me too", "u2")], lock_for="r2")
    session.refresh_from_db()
    assert (second.holds_lock, second.transcript, session.turn_lock) == (False, None, "r1")


@pytest.mark.backends
@pytest.mark.django_db(transaction=True)
def test_a_request_admitted_while_another_holds_the_session_chains_its_message_after_that_ones():
    """The second admission waits for the first's lock on the session row, then must see the
    first's message: its own hangs under it, and the conversation stays one path. (Anonymous:
    a signed-in user's admissions also queue on the user's row, which would hide this.)"""
    session = resolve_session("chat-agent", "admitted-at-once", None)
    first_written, first_may_commit = threading.Event(), threading.Event()

    def admit(message: dict, request_id: str, before_commit: threading.Event | None) -> None:
        try:
            with transaction.atomic():
                client_messages.admit(session, [message], lock_for=request_id)
                if before_commit is not None:
                    first_written.set()
                    before_commit.wait(10)
        finally:
            connection.close()

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(admit, user_message("one", "m1"), "r1", first_may_commit)
        assert first_written.wait(10)
        second = pool.submit(admit, user_message("two", "m2"), "r2", None)
        time.sleep(0.3)  # the second is waiting for the session's row by now
        first_may_commit.set()
        first.result(10)
        second.result(10)
    assert ids(session) == ["m1", "m2"]


def _locked_elsewhere(model: type, pk: int) -> bool:
    """Whether another connection finds row `pk` of `model` locked."""
    try:
        with transaction.atomic():
            list(model.objects.select_for_update(nowait=True).filter(pk=pk).values_list("pk"))
        return False
    except OperationalError:
        return True
    finally:
        connection.close()


@pytest.mark.backends
@pytest.mark.django_db(transaction=True)
def test_an_admission_counting_its_owners_turns_holds_the_owners_row_and_the_sessions_row(user):
    """A signed-in user's admissions queue on the user's row, so that the per-user turn limit
    counts them one after another, and on the session's row, so that their messages chain."""
    if not connection.features.has_select_for_update:
        pytest.skip("SQLite's write transaction locks the whole database")
    session = resolve_session("chat-agent", "rows-locked", user)
    other = resolve_session("chat-agent", "rows-not-locked", user)
    with ThreadPoolExecutor(1) as pool, transaction.atomic():
        client_messages.lock_session(session.pk, user.pk)
        assert pool.submit(_locked_elsewhere, get_user_model(), user.pk).result(10)
        assert pool.submit(_locked_elsewhere, Session, session.pk).result(10)
        assert not pool.submit(_locked_elsewhere, Session, other.pk).result(10)
