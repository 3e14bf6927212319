"""A streamed turn's last writes (storage/turn_ending.py): the chunk log's last batch, the
reply and the outcome are stored together, or none of them is."""
import pytest

from agents_app.storage import chunk_log, transcript, turn_ending
from agents_app.storage.models import Session, Turn
from agents_app.testing.faults import InjectedFault
from agents_app.turns.instances import resolve_session

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends]

QUESTION = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "Weather in Paris?"}]}
ANSWER = {"id": "a1", "role": "assistant", "parts": [{"type": "text", "text": "Sunny.", "state": "done"}]}


@pytest.fixture
def streaming(user):
    session = resolve_session("scripted-agent", "ending", user)
    transcript.save_message(session, QUESTION)
    Session.objects.filter(pk=session.pk).update(terminal={"requestId": "earlier", "body": "It failed."})
    return Turn.objects.create(session=session, request_id="r1", status=Turn.Status.STREAMING)


def _ending(turn: Turn) -> tuple[chunk_log.Batch, turn_ending.Reply, turn_ending.Outcome]:
    chunks = chunk_log.Batch(turn.pk, 0, ['{"type":"text-delta","id":"t","delta":"Sunny."}', '{"type":"finish"}'])
    reply = turn_ending.Reply(Session.objects.get(pk=turn.session_id), ANSWER, QUESTION["id"], None, succeeded=True)
    return chunks, reply, turn_ending.Outcome(Turn.Status.COMPLETED, message_uid=ANSWER["id"])


def test_the_last_chunks_the_reply_and_the_outcome_are_stored_in_one_call(streaming):
    turn_ending.store(streaming, *_ending(streaming))
    assert [seq for seq, _ in chunk_log.read_bodies(streaming.pk)] == [0, 1]
    session = Session.objects.get(pk=streaming.session_id)
    assert [message["id"] for message in transcript.transcript(session)] == ["u1", "a1"]
    assert session.terminal is None  # the turn succeeded: the earlier failure is cleared
    streaming.refresh_from_db()
    assert (streaming.status, streaming.message_uid, streaming.chunk_count) == (Turn.Status.COMPLETED, "a1", 2)


def test_an_ending_that_fails_stores_none_of_it(streaming, settings):
    settings.AGENTS_FAULT_INJECTION = "reply_write"
    with pytest.raises(InjectedFault):
        turn_ending.store(streaming, *_ending(streaming))
    assert chunk_log.read_bodies(streaming.pk) == []
    session = Session.objects.get(pk=streaming.session_id)
    assert [message["id"] for message in transcript.transcript(session)] == ["u1"]
    assert session.terminal == {"requestId": "earlier", "body": "It failed."}
    streaming.refresh_from_db()
    assert (streaming.status, streaming.chunk_count) == (Turn.Status.STREAMING, 0)


def test_an_error_outcome_without_a_reply_records_the_sessions_last_failure(streaming):
    turn_ending.store(streaming, None, None, turn_ending.Outcome(Turn.Status.ERROR, "The model failed."))
    assert Session.objects.get(pk=streaming.session_id).terminal == {"requestId": "r1", "body": "The model failed."}
    streaming.refresh_from_db()
    assert (streaming.status, streaming.error_text) == (Turn.Status.ERROR, "The model failed.")
