"""The recovery hooks an agent author overrides (think.md §9, protocol §9.14): what
`on_chat_recovery` decides and what happens when recovery runs out of one of its budgets."""
from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from agents_app.agents import AIChatAgent, ChatOptions, ChatResponse, register_agent, text_of
from agents_app.storage import chunk_log, client_messages, transcript
from agents_app.storage.models import Session, Turn
from agents_app.turns import recovery
from agents_app.turns.instances import load_agent, resolve_session
from agents_app.turns.recovery import DEFAULT_TERMINAL_MESSAGE, ChatRecoveryContext, RecoveryConfig
from tests.conftest import user_message

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends]

heard: list[tuple[str, Any]] = []


class _RecordingAgent(AIChatAgent):
    """Answers "recovered" and records every recovery hook call."""

    decision: dict[str, bool] | None = None

    async def on_chat_message(self, options: ChatOptions) -> ChatResponse:
        async def answer() -> AsyncIterator[str]:
            yield "recovered"

        return answer()

    async def on_chat_recovery(self, ctx: ChatRecoveryContext) -> dict[str, bool] | None:
        heard.append(("recovery", ctx))
        return self.decision

    async def on_chat_recovery_exhausted(self, ctx: ChatRecoveryContext, reason: str, terminal_message: str) -> None:
        heard.append(("exhausted", (ctx.attempt, reason, terminal_message)))


@register_agent
class DiscardingRecoveryAgent(_RecordingAgent):
    decision = {"persist": False}


@register_agent
class StoppingRecoveryAgent(_RecordingAgent):
    decision = {"continue": False}


@register_agent
class OneAttemptRecoveryAgent(_RecordingAgent):
    chat_recovery = {"maxAttempts": 1, "terminalMessage": "Gave up, sorry."}


@register_agent
class NoProgressRecoveryAgent(_RecordingAgent):
    chat_recovery = {"noProgressTimeoutMs": 60_000, "terminalMessage": "Stuck, sorry."}


@register_agent
class WorkBudgetRecoveryAgent(_RecordingAgent):
    chat_recovery = {"max_recovery_work": 2}


@register_agent
class AbortingRecoveryAgent(_RecordingAgent):
    def should_keep_recovering(self, ctx: ChatRecoveryContext) -> bool:
        heard.append(("keep?", ctx))
        return False


@register_agent
class BrokenJudgeRecoveryAgent(_RecordingAgent):
    async def should_keep_recovering(self, ctx: ChatRecoveryContext) -> bool:
        raise RuntimeError("judge crashed")


@register_agent
class CheckpointingAgent(AIChatAgent):
    """Checkpoints its progress with stash() before answering."""

    async def on_chat_message(self, options: ChatOptions) -> ChatResponse:
        assert await self.stash({"step": 2, "sources": ["a", "b"]})
        return "checked in"


@pytest.fixture(autouse=True)
def fresh_hook_log() -> None:
    heard.clear()


def interrupted_turn(
    agent: str, name: str, user: Any, partial: str | list[dict[str, Any]], request_id: str = "dead0001", stash: Any = None, recovery_root: str = "",
) -> tuple[Session, Turn]:
    """A session whose streaming turn lost its process after streaming `partial` (a text, or
    the chunks themselves)."""
    session = resolve_session(agent, name, user)
    client_messages.upsert(session, [user_message("tell me something", "u1")], move_leaf=True)
    turn = Turn.objects.create(
        session=session, request_id=request_id, status=Turn.Status.STREAMING, message_uid=f"assistant_{request_id}",
        recovery_root=recovery_root,
    )
    chunks = partial
    if isinstance(partial, str):
        chunks = [{"type": "start"}, {"type": "text-start", "id": "t1"}, {"type": "text-delta", "id": "t1", "delta": partial}] if partial else []
    if chunks:
        chunk_log.write_batch(turn.pk, 0, [json.dumps(chunk) for chunk in chunks])
    # Its last heartbeat (written with every stored batch) is long past.
    Turn.objects.filter(pk=turn.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=5), recovery_data=stash)
    turn.refresh_from_db()
    return session, turn


def interrupted_recovery(agent: str, name: str, user: Any, partial: str | list[dict[str, Any]], first_interrupted_ago: timedelta) -> tuple[Session, Turn]:
    """A session whose turn "dead0001" was interrupted `first_interrupted_ago`, and whose
    recovery turn then lost its process too after streaming `partial`."""
    session, turn = interrupted_turn(agent, name, user, partial, request_id="again001", recovery_root="dead0001")
    Turn.objects.create(
        session=session, request_id="dead0001", status=Turn.Status.INTERRUPTED,
        finished_at=timezone.now() - first_interrupted_ago,
    )
    return session, turn


async def assert_exhausted_without_another_attempt(session: Session, turn: Turn, reason: str, terminal_message: str) -> None:
    assert heard[-1] == ("exhausted", (2, reason, terminal_message))
    stored = await sync_to_async(Session.objects.get)(pk=session.pk)
    assert stored.terminal == {"requestId": turn.request_id, "body": terminal_message}
    assert stored.recovering is None
    assert await sync_to_async(Turn.objects.filter(session=session).count)() == 2


def roles_and_texts(session: Session) -> list[tuple[str, str]]:
    return [(m["role"], text_of(m)) for m in transcript.transcript(session)]


async def test_on_chat_recovery_is_told_what_the_interrupted_turn_had_streamed(user):
    session, turn = await sync_to_async(interrupted_turn)("one-attempt-recovery-agent", "told", user, "Once upon")

    await recovery.recover(turn.pk)

    kind, ctx = heard[0]
    assert kind == "recovery"
    assert (ctx.recovery_kind, ctx.partial_text, ctx.attempt, ctx.max_attempts) == ("continue", "Once upon", 1, 1)
    assert ctx.request_id == turn.request_id == ctx.recovery_root_request_id


async def test_persist_false_drops_the_partial_answer_and_the_turn_is_retried(user):
    session, turn = await sync_to_async(interrupted_turn)("discarding-recovery-agent", "drop", user, "half an ans")

    result = await recovery.recover(turn.pk)

    assert result is not None and result.status == "completed"
    assert await sync_to_async(roles_and_texts)(session) == [("user", "tell me something"), ("assistant", "recovered")]


async def test_continue_false_keeps_the_partial_answer_and_runs_no_recovery_turn(user):
    session, turn = await sync_to_async(interrupted_turn)("stopping-recovery-agent", "stop", user, "half an ans")

    assert await recovery.recover(turn.pk) is None

    assert await sync_to_async(roles_and_texts)(session) == [("user", "tell me something"), ("assistant", "half an ans")]
    assert await sync_to_async(Turn.objects.filter(session=session).count)() == 1
    assert (await sync_to_async(Session.objects.get)(pk=session.pk)).recovering is None


async def test_a_turn_past_its_max_attempts_is_exhausted_with_the_terminal_message(user):
    session, first = await sync_to_async(interrupted_turn)("one-attempt-recovery-agent", "tired", user, "")
    await sync_to_async(Turn.objects.create)(
        session=session, request_id="earlier1", status=Turn.Status.INTERRUPTED, recovery_root=first.request_id,
    )

    assert await recovery.recover(first.pk) is None

    assert heard[-1] == ("exhausted", (2, "max_attempts_exceeded", "Gave up, sorry."))
    stored = await sync_to_async(Session.objects.get)(pk=session.pk)
    assert stored.terminal == {"requestId": first.request_id, "body": "Gave up, sorry."}
    assert stored.recovering is None
    assert await sync_to_async(roles_and_texts)(session) == [("user", "tell me something")]


async def test_a_recovery_within_its_attempts_answers_and_exhausts_nothing(user):
    session, turn = await sync_to_async(interrupted_turn)("one-attempt-recovery-agent", "fresh", user, "")

    result = await recovery.recover(turn.pk)

    assert result is not None and result.status == "completed"
    assert [kind for kind, _ in heard] == ["recovery"]
    assert await sync_to_async(roles_and_texts)(session) == [("user", "tell me something"), ("assistant", "recovered")]


async def test_stash_checkpoints_app_data_on_the_running_turn(user):
    session = await sync_to_async(resolve_session)("checkpointing-agent", "stash", user)
    agent = await sync_to_async(load_agent)(session)

    result = await agent.save_messages([user_message("go", "u1")], request_id="stash001")

    assert result.status == "completed"
    turn = await sync_to_async(Turn.objects.get)(session=session, request_id="stash001")
    assert turn.recovery_data == {"step": 2, "sources": ["a", "b"]}
    assert await agent.stash({"step": 3}) is False  # no turn is running any more


async def test_on_chat_recovery_gets_the_interrupted_turns_last_stash(user):
    session, turn = await sync_to_async(interrupted_turn)("stopping-recovery-agent", "stashed", user, "half", stash={"step": 4})

    await recovery.recover(turn.pk)

    assert heard[0][1].recovery_data == {"step": 4}


async def test_on_chat_recovery_is_told_the_chains_work_and_age(user):
    session, turn = await sync_to_async(interrupted_recovery)("stopping-recovery-agent", "aged", user, "more", timedelta(minutes=10))

    await recovery.recover(turn.pk)

    ctx = heard[0][1]
    assert ctx.work == 3  # the chunks the dead recovery turn streamed: start, text-start, text-delta
    assert 600_000 <= ctx.age_ms < 660_000


async def test_a_chain_without_new_output_for_the_no_progress_timeout_is_exhausted(user):
    session, turn = await sync_to_async(interrupted_recovery)("no-progress-recovery-agent", "idle", user, "", timedelta(minutes=10))

    assert await recovery.recover(turn.pk) is None

    await assert_exhausted_without_another_attempt(session, turn, "no_progress_timeout", "Stuck, sorry.")


async def test_an_attempt_that_streamed_output_resets_the_no_progress_window(user):
    session, turn = await sync_to_async(interrupted_recovery)("no-progress-recovery-agent", "busy", user, "more", timedelta(minutes=10))

    result = await recovery.recover(turn.pk)

    assert result is not None and result.status == "completed"
    assert [kind for kind, _ in heard] == ["recovery"]


async def test_an_attempt_that_only_opened_its_stream_does_not_reset_the_no_progress_window(user):
    # Killed while waiting for the model: only the stream's opening chunk was stored.
    opened = [{"type": "start"}]
    session, turn = await sync_to_async(interrupted_recovery)("no-progress-recovery-agent", "opened", user, opened, timedelta(minutes=10))

    assert await recovery.recover(turn.pk) is None

    await assert_exhausted_without_another_attempt(session, turn, "no_progress_timeout", "Stuck, sorry.")


async def test_a_chain_past_its_work_budget_is_exhausted_and_keeps_its_partial(user):
    session, turn = await sync_to_async(interrupted_recovery)("work-budget-recovery-agent", "work", user, "more", timedelta(0))

    assert await recovery.recover(turn.pk) is None

    await assert_exhausted_without_another_attempt(session, turn, "work_budget_exceeded", DEFAULT_TERMINAL_MESSAGE)
    assert await sync_to_async(roles_and_texts)(session) == [("user", "tell me something"), ("assistant", "more")]


async def test_should_keep_recovering_false_ends_the_chain_with_recovery_aborted(user):
    session, turn = await sync_to_async(interrupted_recovery)("aborting-recovery-agent", "abort", user, "", timedelta(0))

    assert await recovery.recover(turn.pk) is None

    asked = [ctx for kind, ctx in heard if kind == "keep?"]
    assert [(ctx.attempt, ctx.work) for ctx in asked] == [(2, 0)]
    await assert_exhausted_without_another_attempt(session, turn, "recovery_aborted", DEFAULT_TERMINAL_MESSAGE)


async def test_should_keep_recovering_is_not_asked_on_the_first_attempt(user):
    session, turn = await sync_to_async(interrupted_turn)("aborting-recovery-agent", "first", user, "")

    result = await recovery.recover(turn.pk)

    assert result is not None and result.status == "completed"
    assert [kind for kind, _ in heard] == ["recovery"]


async def test_an_error_in_should_keep_recovering_keeps_recovering(user):
    session, turn = await sync_to_async(interrupted_recovery)("broken-judge-recovery-agent", "broken", user, "", timedelta(0))

    result = await recovery.recover(turn.pk)

    assert result is not None and result.status == "completed"
    assert await sync_to_async(roles_and_texts)(session) == [("user", "tell me something"), ("assistant", "recovered")]


def test_chat_recovery_budgets_are_read_from_camel_and_snake_case_keys():
    camel = {"maxAttempts": 3, "terminalMessage": "Bye.", "noProgressTimeoutMs": 5000, "maxRecoveryWork": 7}
    snake = {"max_attempts": 3, "terminal_message": "Bye.", "no_progress_timeout_ms": 5000, "max_recovery_work": 7}

    assert RecoveryConfig.parse(camel) == RecoveryConfig.parse(snake) == RecoveryConfig(3, "Bye.", 5000, 7)
    assert RecoveryConfig.parse(True) == RecoveryConfig(10, DEFAULT_TERMINAL_MESSAGE, 300_000, 1000)
