"""Admin: agents and their settings, sessions with their conversation, turns, API tokens,
schedules with their run history."""
from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from agents_app.protocol.messages import text_of
from agents_app.think import compaction, context_blocks
from agents_app.turns import scheduling
from agents_app.agents.think_agent import ThinkAgent
from agents_app.turns.instances import load_agent
from agents_app.storage import search, transcript
from agents_app.storage.models import (
    Agent,
    ApiToken,
    Compaction,
    ContextBlock,
    ContextBlockVersion,
    Message,
    Schedule,
    ScheduleRun,
    Session,
    Turn,
)
from agents_app.storage.workspace import WorkspaceEntry


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ("slug", "title", "class_path", "enabled", "session_count", "updated_at")
    list_filter = ("enabled",)
    search_fields = ("slug", "title", "class_path")
    readonly_fields = ("class_path", "webhook_key_prefix", "created_at", "updated_at")
    actions = ("issue_webhook_key",)

    @admin.action(description="Issue a new webhook key (replaces the old one)")
    def issue_webhook_key(self, request: HttpRequest, queryset: Any) -> None:
        for record in queryset:
            raw_key = record.issue_webhook_key()
            self.message_user(
                request,
                format_html("Webhook key for {} (copy it now, it is not shown again): <code>{}</code>", record.slug, raw_key),
                messages.SUCCESS,
            )

    @admin.display(description="Sessions")
    def session_count(self, obj: Agent) -> int:
        return obj.sessions.count()


class ReadOnlyInline(admin.TabularInline):
    """Records the system writes: shown, never added or edited here."""

    extra = 0
    can_delete = False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ContextBlockInline(ReadOnlyInline):
    model = ContextBlock
    fields = ("label", "content", "updated_at")
    show_change_link = True


class CompactionInline(ReadOnlyInline):
    """Deleting an overlay here undoes the compaction: the model sees the originals again."""

    model = Compaction
    fields = ("from_message", "to_message", "summary", "tokens_before", "created_at")
    can_delete = True


class TurnInline(ReadOnlyInline):
    model = Turn
    fields = ("request_id", "status", "source", "is_continuation", "recovery_root", "chunk_count", "created_at", "finished_at", "error_text")
    ordering = ("-id",)


@admin.register(Session)
class SessionAdmin(admin.ModelAdmin):
    list_display = ("__str__", "owner", "title", "message_count", "updated_at")
    list_filter = ("agent", "created_at")
    search_fields = ("name", "title", "owner__username")
    raw_id_fields = ("owner", "active_leaf")
    readonly_fields = ("created_at", "updated_at", "turn_lock", "turn_lock_heartbeat", "terminal", "recovering")
    inlines = (ContextBlockInline, CompactionInline, TurnInline)
    actions = ("release_turn_lock", "compact_now")

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None) -> Any:
        session = self.get_object(request, object_id)
        if session is not None:
            query = request.GET.get("q", "").strip()
            rows = transcript.tree(session)
            marked = {m["id"] for m in transcript.transcript(session) if (m.get("metadata") or {}).get("compaction")}
            covered = {row.message.pk for row in rows if row.message.uid in marked}
            extra_context = {
                **(extra_context or {}),
                "tree_rows": rows,
                "summarised": covered,
                "tree_query": query,
                "tree_hits": search.search_messages(query, session_ids=[session.pk]) if query else [],
            }
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.action(description="Compact now (summarise the middle of the conversation)")
    def compact_now(self, request: HttpRequest, queryset: Any) -> None:
        for session in queryset.select_related("agent"):
            agent = load_agent(session)
            if not isinstance(agent, ThinkAgent):
                self.message_user(request, f"{session}: only Think agents compact.", messages.WARNING)
                continue
            overlay = async_to_sync(compaction.compact)(agent)
            note = f"summarised {overlay.tokens_before} tokens" if overlay else "too short to compact"
            self.message_user(request, f"{session}: {note}.", messages.SUCCESS)

    @admin.display(description="Messages")
    def message_count(self, obj: Session) -> int:
        return obj.messages.count()

    @admin.action(description="Release a stuck turn lock")
    def release_turn_lock(self, request: HttpRequest, queryset: Any) -> None:
        released = queryset.exclude(turn_lock="").update(turn_lock="")
        self.message_user(request, f"Released {released} lock(s).", messages.SUCCESS)


class ContextBlockVersionInline(ReadOnlyInline):
    model = ContextBlockVersion
    fields = ("created_at", "source", "content")


@admin.register(ContextBlock)
class ContextBlockAdmin(admin.ModelAdmin):
    """Edits keep the previous content as a version; "Undo last write" restores it."""

    list_display = ("label", "session", "updated_at")
    search_fields = ("label", "session__name", "content")
    raw_id_fields = ("session",)
    readonly_fields = ("created_at", "updated_at")
    inlines = (ContextBlockVersionInline,)
    actions = ("undo_last_write",)

    def save_model(self, request: HttpRequest, obj: ContextBlock, form: Any, change: bool) -> None:
        if change and "content" in form.changed_data:
            ContextBlockVersion.objects.create(block=obj, content=form.initial.get("content", ""), source="admin")
        super().save_model(request, obj, form, change)

    @admin.action(description="Undo last write")
    def undo_last_write(self, request: HttpRequest, queryset: Any) -> None:
        undone = sum(context_blocks.undo_last_write(block) for block in queryset)
        self.message_user(request, f"Restored {undone} block(s).", messages.SUCCESS)


@admin.register(Compaction)
class CompactionAdmin(admin.ModelAdmin):
    """Deleting an overlay undoes it: the originals were never removed."""

    list_display = ("__str__", "session", "tokens_before", "created_at")
    readonly_fields = ("session", "from_message", "to_message", "summary", "tokens_before", "created_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("uid", "session", "role", "preview", "created_at")
    list_filter = ("role", "session__agent")
    search_fields = ("uid", "session__name", "text_content")
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


class ScheduleForm(forms.ModelForm):
    class Meta:
        model = Schedule
        fields = ("session", "callback", "payload", "kind", "run_at", "cron", "enabled")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("kind") == Schedule.Kind.CRON:
            try:
                scheduling.parse_cron(data.get("cron") or "")
            except scheduling.InvalidSchedule as error:
                self.add_error("cron", str(error))
        elif not data.get("run_at"):
            self.add_error("run_at", "A one-shot schedule needs a time.")
        return data


def continue_in_thread(request: HttpRequest, session: Session) -> str:
    """The owner continues in the chat UI; an operator looking at someone else's session
    opens it in the admin (users only ever see their own chats)."""
    if session.owner_id == request.user.pk:
        return reverse("chat-page", args=[session.agent.slug, session.name])
    return reverse("admin:agents_app_session_change", args=[session.pk])


class ScheduleRunInline(ReadOnlyInline):
    model = ScheduleRun
    fields = ("started_at", "finished_at", "status", "request_id", "produced", "error_text")
    ordering = ("-id",)

    @admin.display(description="Produced message")
    def produced(self, obj: ScheduleRun) -> str:
        if not obj.message_uid:
            return "–"
        url = continue_in_thread(self.request, obj.schedule.session)
        return format_html('{} · <a href="{}">continue in thread</a>', obj.message_uid, url)

    def get_queryset(self, request: HttpRequest) -> Any:
        self.request = request
        return super().get_queryset(request).select_related("schedule__session__agent")


@admin.register(Schedule)
class ScheduleAdmin(admin.ModelAdmin):
    form = ScheduleForm
    list_display = ("__str__", "session", "kind", "enabled", "done", "last_run")
    list_filter = ("kind", "enabled", "done", "session__agent")
    search_fields = ("callback", "session__name", "cron")
    raw_id_fields = ("session",)
    inlines = (ScheduleRunInline,)
    actions = ("run_now", "pause", "resume")

    @admin.display(description="Last run")
    def last_run(self, obj: Schedule) -> str:
        run = obj.runs.order_by("-id").first()
        return f"{run.started_at:%Y-%m-%d %H:%M} {run.status}" if run else "–"

    def save_model(self, request: HttpRequest, obj: Schedule, form: Any, change: bool) -> None:
        if obj.kind != Schedule.Kind.CRON and "run_at" in form.changed_data:
            obj.done = False  # moved to a new time: it runs again
        super().save_model(request, obj, form, change)
        scheduling.activate(obj)

    def delete_model(self, request: HttpRequest, obj: Schedule) -> None:
        scheduling.delete(obj)

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for schedule in queryset:
            scheduling.delete(schedule)

    @admin.action(description="Run now")
    def run_now(self, request: HttpRequest, queryset: Any) -> None:
        for schedule in queryset:
            scheduling.run_now(schedule)
        self.message_user(request, f"Started {queryset.count()} schedule(s); their runs appear below each one.", messages.SUCCESS)

    @admin.action(description="Pause")
    def pause(self, request: HttpRequest, queryset: Any) -> None:
        for schedule in queryset:
            scheduling.set_enabled(schedule, False)

    @admin.action(description="Resume")
    def resume(self, request: HttpRequest, queryset: Any) -> None:
        for schedule in queryset:
            scheduling.set_enabled(schedule, True)


@admin.register(ScheduleRun)
class ScheduleRunAdmin(admin.ModelAdmin):
    list_display = ("schedule", "status", "started_at", "finished_at", "request_id", "message_uid")
    list_filter = ("status",)
    search_fields = ("request_id", "message_uid", "schedule__callback")
    readonly_fields = [f.name for f in ScheduleRun._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(WorkspaceEntry)
class WorkspaceEntryAdmin(admin.ModelAdmin):
    """The files agents wrote in their sessions' workspaces (edit with care: the model reads them)."""

    list_display = ("__str__", "session", "is_directory", "size", "updated_at")
    list_filter = ("is_directory", "session__agent")
    search_fields = ("path", "session__name")
    raw_id_fields = ("session",)
    readonly_fields = ("size", "updated_at")
from agents_app.mcp import admin as mcp_admin  # noqa: E402,F401 - registers the MCP admin pages
from agents_app.sandbox import admin as sandbox_admin  # noqa: E402,F401 - registers the extension admin pages
