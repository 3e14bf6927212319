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
    TurnChunk,
)
from agents_app.mcp.models import AgentMcpServer, McpServer
from agents_app.sandbox.models import SessionExtension
from agents_app.storage.workspace import WorkspaceEntry

__all__ = [
    "Agent",
    "AgentMcpServer",
    "ApiToken",
    "Compaction",
    "ContextBlock",
    "ContextBlockVersion",
    "ContextEntry",
    "McpServer",
    "Message",
    "Schedule",
    "ScheduleRun",
    "Session",
    "SessionExtension",
    "Turn",
    "TurnChunk",
    "WorkspaceEntry",
]
