"""Agent classes by URL segment, and their database records."""
from __future__ import annotations

import logging
from typing import TypeVar

from django.conf import settings
from django.utils.module_loading import import_string

from agents_app.protocol.naming import agent_segment
from agents_app.storage.compiled_query import CompiledQuery
from agents_app.storage.models import Agent as AgentRecord
from agents_app.turns.agent_interface import HostedAgent

logger = logging.getLogger(__name__)
_REGISTRY: dict[str, type[HostedAgent]] = {}
AgentClass = TypeVar("AgentClass", bound=type[HostedAgent])


def register_agent(cls: AgentClass) -> AgentClass:
    """Class decorator: make an agent reachable at /agents/<kebab-case class name>/<name>.
    A later class of the same name takes the URL over (logged: two apps may clash)."""
    segment = agent_segment(cls.__name__)
    earlier = _REGISTRY.get(segment)
    if earlier is not None and _path(earlier) != _path(cls):
        logger.warning("register_agent: %s replaces %s at /agents/%s/", _path(cls), _path(earlier), segment)
    _REGISTRY[segment] = cls
    return cls


def _path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def load_configured_agents() -> None:
    """Import the classes listed in the AGENTS_CLASSES setting (dotted paths)."""
    for path in getattr(settings, "AGENTS_CLASSES", []):
        register_agent(import_string(path))


def agent_class(segment: str) -> type[HostedAgent] | None:
    return _REGISTRY.get(segment)


def registered_segments() -> list[str]:
    return sorted(_REGISTRY)


# Read as every connection opens: compiled once.
_BY_SLUG = CompiledQuery(lambda slug: AgentRecord.objects.filter(slug=slug))


def agent_record(segment: str) -> AgentRecord | None:
    """The enabled database record of a registered agent, created on first use."""
    cls = _REGISTRY.get(segment)
    if cls is None:
        return None
    record = _BY_SLUG.instance(segment)
    if record is not None:
        return record if record.enabled else None
    record, _ = AgentRecord.objects.get_or_create(
        slug=segment,
        defaults={
            "class_path": _path(cls),
            "title": cls.title or cls.__name__,
            "description": cls.description,
        },
    )
    return record if record.enabled else None


def sync_agent_records() -> list[AgentRecord]:
    return [record for segment in registered_segments() if (record := agent_record(segment)) is not None]
