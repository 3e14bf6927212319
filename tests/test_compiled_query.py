"""Querysets compiled once and run with new keys (storage/compiled_query.py)."""
from __future__ import annotations

from typing import Any

import pytest

from agents_app.storage.compiled_query import CompiledQuery
from agents_app.storage.models import Agent, Message, Session

pytestmark = [pytest.mark.django_db, pytest.mark.backends]

_BY_UIDS = CompiledQuery(lambda pk, uid, other: Message.objects.filter(session_id=pk, uid__in=[uid, other]).order_by("uid"))
_NAME = CompiledQuery(lambda pk: Session.objects.filter(pk=pk).values_list("name"))


def _session(name: str) -> Session:
    agent, _ = Agent.objects.get_or_create(slug="compiled-query", defaults={"class_path": "agents_app.demo_agents.EchoAgent"})
    session = Session.objects.create(agent=agent, name=name)
    for uid in ("a", "b", "c"):
        Message.objects.create(session=session, uid=uid, role="user", parts=[{"type": "text", "text": uid}])
    return session


def test_a_query_with_several_keys_returns_the_rows_of_the_keys_it_is_given() -> None:
    first, second = _session("first"), _session("second")
    assert [m.uid for m in _BY_UIDS.instances(first.pk, "a", "c")] == ["a", "c"]
    assert [m.uid for m in _BY_UIDS.instances(second.pk, "b", "b")] == ["b"]
    assert all(m.session_id == second.pk for m in _BY_UIDS.instances(second.pk, "a", "b"))


def test_a_query_for_a_missing_key_returns_no_row() -> None:
    session = _session("present")
    assert _NAME.row(session.pk) == ("present",)
    assert _NAME.row(session.pk + 1000) is None


def test_a_query_that_ignores_a_key_is_refused_when_compiled() -> None:
    ignoring = CompiledQuery(lambda pk, unused: Session.objects.filter(pk=pk))
    with pytest.raises(ValueError, match="every key"):
        ignoring.instances(1, 2)


_WITH_AGENT = CompiledQuery(lambda pk: Session.objects.select_related("agent").filter(pk=pk))


def test_an_instance_is_the_one_a_queryset_builds_with_its_related_rows_and_converted_fields(django_assert_num_queries: Any) -> None:
    session = _session("related")
    Session.objects.filter(pk=session.pk).update(state={"count": 3}, request_context={"lastBody": {"k": [1]}})
    expected = Session.objects.select_related("agent").get(pk=session.pk)
    loaded = _WITH_AGENT.instance(session.pk)
    assert loaded is not None
    assert loaded.state == {"count": 3} and loaded.request_context == {"lastBody": {"k": [1]}}
    assert loaded.created_at == expected.created_at and loaded.created_at.tzinfo is not None
    assert {field.attname: getattr(loaded, field.attname) for field in Session._meta.concrete_fields} == {
        field.attname: getattr(expected, field.attname) for field in Session._meta.concrete_fields
    }
    with django_assert_num_queries(0):  # the agent came with the session
        assert loaded.agent.slug == "compiled-query" and loaded.agent.pk == expected.agent.pk
    assert _WITH_AGENT.instance(session.pk + 1000) is None
