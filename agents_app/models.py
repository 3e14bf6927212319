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
from agents_app.mcp.models import AgentMcpServer, McpServer
from agents_app.sandbox.models import SessionExtension
from agents_app.storage.workspace import WorkspaceEntry
from agents_app.ui.models import Attachment, QueuedMessage

__all__ = [
    "Agent",
    "AgentMcpServer",
    "ApiToken",
    "Attachment",
    "Compaction",
    "ContextBlock",
    "ContextBlockVersion",
    "ContextEntry",
    "McpServer",
    "Message",
    "QueuedMessage",
    "Schedule",
    "ScheduleRun",
    "Session",
    "SessionExtension",
    "Turn",
    "ToolGrant",
    "TurnChunk",
    "WorkspaceEntry",
]
