"""Admin: the extensions loaded into each session, with their source (read-only)."""
from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.utils.html import format_html

from agents_app.sandbox.models import SessionExtension


@admin.register(SessionExtension)
class SessionExtensionAdmin(admin.ModelAdmin):
    list_display = ("name", "session", "tool_names", "network", "loaded_at")
    search_fields = ("name", "session__name")
    fields = ("session", "name", "manifest", "tools", "source_view", "loaded_at")
    readonly_fields = fields

    @admin.display(description="Tools")
    def tool_names(self, obj: SessionExtension) -> str:
        return ", ".join(f"{obj.name}_{name}" for name in sorted(obj.tools))

    @admin.display(description="Network")
    def network(self, obj: SessionExtension) -> Any:
        return (obj.manifest.get("permissions") or {}).get("network", False)

    @admin.display(description="Source")
    def source_view(self, obj: SessionExtension) -> str:
        return format_html('<pre style="white-space:pre-wrap;max-height:40em;overflow:auto">{}</pre>', obj.source)

    def has_add_permission(self, request: Any) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False
