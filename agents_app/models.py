"""Django discovers models here; they live in the storage layer."""
from agents_app.storage.models import (
    Agent,
    ApiToken,
    Compaction,
    ContextBlock,
    ContextBlockVersion,
    ContextEntry,
    Message,
    Schedule,
    ScheduleRun,
    Session,
    Turn,
    ToolGrant,
    TurnChunk,
)
from agents_app.storage.workspace import WorkspaceEntry
from agents_app.ui.models import Attachment, QueuedMessage

__all__ = [
    "Agent",
    "ApiToken",
    "Attachment",
    "Compaction",
    "ContextBlock",
    "ContextBlockVersion",
    "ContextEntry",
    "Message",
    "QueuedMessage",
    "Schedule",
    "ScheduleRun",
    "Session",
    "Turn",
    "ToolGrant",
    "TurnChunk",
    "WorkspaceEntry",
]
