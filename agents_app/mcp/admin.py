"""Admin: MCP servers operators attach to an agent class (secrets are write-only) and the
servers of each session with their last known state (read-only, without secrets)."""
from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin

from agents_app.mcp.models import AgentMcpServer, McpServer

MASK = "********"


def _secret_lines(values: dict[str, str]) -> str:
    return "\n".join(f"{name}: {MASK}" for name in values)


def _parse_secret_lines(text: str, previous: dict[str, str], label: str) -> dict[str, str]:
    """`Name: value` per line; a masked value keeps what was stored."""
    parsed: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise forms.ValidationError(f"{label} line {number}: write it as 'Name: value'")
        value = value.strip()
        if value == MASK:
            if name.strip() not in previous:
                raise forms.ValidationError(f"{label} line {number}: give a value for {name.strip()}")
            value = previous[name.strip()]
        parsed[name.strip()] = value
    return parsed


class AgentMcpServerForm(forms.ModelForm):
    headers_text = forms.CharField(
        label="Headers", required=False, widget=forms.Textarea(attrs={"rows": 3}),
        help_text=f"One 'Name: value' per line, e.g. 'Authorization: Bearer …'. Stored values are shown as {MASK}; keep {MASK} to keep a value.",
    )
    env_text = forms.CharField(
        label="Environment", required=False, widget=forms.Textarea(attrs={"rows": 3}),
        help_text="stdio only: one 'NAME: value' per line, write-only like the headers.",
    )

    class Meta:
        model = AgentMcpServer
        fields = ("agent", "name", "transport", "url", "command", "args", "enabled")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["headers_text"].initial = _secret_lines(self.instance.headers or {})
        self.fields["env_text"].initial = _secret_lines(self.instance.env or {})

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        transport = data.get("transport")
        if transport == "stdio" and not data.get("command"):
            self.add_error("command", "A stdio server needs a command")
        if transport != "stdio" and not data.get("url"):
            self.add_error("url", "An HTTP server needs a URL")
        if not isinstance(data.get("args") or [], list):
            self.add_error("args", "Arguments are a JSON list of strings")
        self.instance.headers = _parse_secret_lines(data.get("headers_text", ""), self.instance.headers or {}, "Headers")
        self.instance.env = _parse_secret_lines(data.get("env_text", ""), self.instance.env or {}, "Environment")
        return data


@admin.register(AgentMcpServer)
class AgentMcpServerAdmin(admin.ModelAdmin):
    form = AgentMcpServerForm
    list_display = ("name", "agent", "transport", "url", "command", "enabled")
    list_filter = ("enabled", "transport", "agent")
    fields = ("agent", "name", "transport", "url", "command", "args", "headers_text", "env_text", "enabled")


@admin.register(McpServer)
class McpServerAdmin(admin.ModelAdmin):
    list_display = ("name", "session", "server_url", "state", "tool_count", "updated_at")
    list_filter = ("state",)
    search_fields = ("name", "server_url", "session__name")
    fields = ("id", "session", "attached", "name", "server_url", "transport", "state", "error", "auth_url", "instructions", "capabilities", "tools", "prompts", "resources", "created_at", "updated_at")
    readonly_fields = fields

    @admin.display(description="Tools")
    def tool_count(self, obj: McpServer) -> int:
        return len(obj.tools or [])

    def has_add_permission(self, request: Any) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False
