"""What a Think agent's turn needs from its session besides the conversation, asked in one
round trip.

A turn reads the blocks added at run time, the extensions the model loaded, the MCP servers
of the instance and of its agent class, the compaction overlays and the owner's "always
allow" grants. Most sessions have none of these, and asking for each on its own costs a
round trip that finds nothing, on every turn of every chat. One query on the session row
tells which of them exist (and reads the tools allowed in this chat), so a turn reads only
those that do.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet

from agents_app.mcp.manager import servers_stored
from agents_app.sandbox.extensions import extensions_stored
from agents_app.storage.compiled_query import CompiledQuery, json_value
from agents_app.storage.models import Session
from agents_app.storage.overlays import compactions_stored
from agents_app.think.context_blocks import runtime_blocks_stored
from agents_app.think.model_loop import grants_stored


@dataclass(frozen=True)
class StoredFeatures:
    # Session.allowed_tools: tools the owner always allows in this chat.
    allowed_tools: frozenset[str] = frozenset()
    runtime_blocks: bool = False
    extensions: bool = False
    mcp_servers: bool = False
    compactions: bool = False
    tool_grants: bool = False


_FLAGS = ("has_runtime_blocks", "has_extensions", "has_mcp_servers", "has_compactions", "has_tool_grants")


def feature_annotations() -> dict[str, Any]:
    """Which stored features a session (the query's row) has, as annotations of its row."""
    return {
        "has_runtime_blocks": runtime_blocks_stored(),
        "has_extensions": extensions_stored(),
        "has_mcp_servers": servers_stored(),
        "has_compactions": compactions_stored(),
        "has_tool_grants": grants_stored(),
    }


def _features_of(session_id: int) -> QuerySet[Session]:
    return Session.objects.filter(pk=session_id).annotate(**feature_annotations()).values_list("allowed_tools", *_FLAGS)


# Read before every Think turn's first token: compiled once (storage/compiled_query.py).
_FEATURES = CompiledQuery(_features_of)


def read_stored_features(session_id: int) -> StoredFeatures:
    """As stored now; a session deleted meanwhile has none."""
    row = _FEATURES.row(session_id)
    if row is None:
        return StoredFeatures()
    allowed_tools, *flags = row
    return StoredFeatures(frozenset(json_value(allowed_tools) or ()), *(bool(flag) for flag in flags))


def features_on(session: Session) -> StoredFeatures | None:
    """The features of a session row read with `feature_annotations` (None when it was not)."""
    if not hasattr(session, _FLAGS[0]):
        return None
    return StoredFeatures(frozenset(session.allowed_tools or ()), *(bool(getattr(session, flag)) for flag in _FLAGS))
