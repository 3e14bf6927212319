"""Admin: agents and their settings, sessions with their conversation, turns, API tokens."""
from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest
from django.utils.html import format_html

from agents_app.protocol.messages import text_of
from agents_app.storage.models import Agent, ApiToken, Message, Session, Turn


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ("slug", "title", "class_path", "enabled", "session_count", "updated_at")
    list_filter = ("enabled",)
    search_fields = ("slug", "title", "class_path")
    readonly_fields = ("class_path", "created_at", "updated_at")

    @admin.display(description="Sessions")
    def session_count(self, obj: Agent) -> int:
        return obj.sessions.count()


class MessageInline(admin.TabularInline):
    model = Message
    fields = ("uid", "role", "parent", "preview", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True
    ordering = ("id",)

    @admin.display(description="Text")
    def preview(self, obj: Message) -> str:
        return text_of(obj.as_ui_message())[:200]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class TurnInline(admin.TabularInline):
    model = Turn
    fields = ("request_id", "status", "source", "is_continuation", "chunk_count", "created_at", "finished_at", "error_text")
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ("-id",)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Session)
class SessionAdmin(admin.ModelAdmin):
    list_display = ("__str__", "owner", "title", "message_count", "updated_at")
    list_filter = ("agent", "created_at")
    search_fields = ("name", "title", "owner__username")
    raw_id_fields = ("owner", "active_leaf")
    readonly_fields = ("created_at", "updated_at", "turn_lock", "turn_lock_heartbeat", "terminal")
    inlines = (MessageInline, TurnInline)
    actions = ("release_turn_lock",)

    @admin.display(description="Messages")
    def message_count(self, obj: Session) -> int:
        return obj.messages.count()

    @admin.action(description="Release a stuck turn lock")
    def release_turn_lock(self, request: HttpRequest, queryset: Any) -> None:
        released = queryset.exclude(turn_lock="").update(turn_lock="")
        self.message_user(request, f"Released {released} lock(s).", messages.SUCCESS)


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("uid", "session", "role", "preview", "created_at")
    list_filter = ("role", "session__agent")
    search_fields = ("uid", "session__name")
    raw_id_fields = ("session", "parent")

    @admin.display(description="Text")
    def preview(self, obj: Message) -> str:
        return text_of(obj.as_ui_message())[:120]


@admin.register(Turn)
class TurnAdmin(admin.ModelAdmin):
    list_display = ("request_id", "session", "status", "source", "is_continuation", "chunk_count", "created_at", "duration")
    list_filter = ("status", "source", "is_continuation")
    search_fields = ("request_id", "session__name", "message_uid")
    raw_id_fields = ("session",)
    readonly_fields = [f.name for f in Turn._meta.fields]

    @admin.display(description="Duration")
    def duration(self, obj: Turn) -> str:
        if obj.started_at and obj.finished_at:
            return f"{(obj.finished_at - obj.started_at).total_seconds():.2f}s"
        return "–"


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("user", "name", "prefix", "created_at", "last_used_at")
    search_fields = ("user__username", "name", "prefix")
    readonly_fields = ("prefix", "created_at", "last_used_at")
    fields = ("user", "name", "prefix", "created_at", "last_used_at")

    def save_model(self, request: HttpRequest, obj: ApiToken, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        token, raw_key = ApiToken.issue(obj.user, obj.name)
        obj.pk, obj.prefix, obj.key_hash = token.pk, token.prefix, token.key_hash
        # Shown once: only a hash is stored.
        self.message_user(request, format_html("New token (copy it now, it is not shown again): <code>{}</code>", raw_key))
