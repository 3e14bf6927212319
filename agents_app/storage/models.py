"""Agents, their sessions, branching message trees and the chunk log of turns in flight."""
from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class Agent(models.Model):
    """A registered agent class, addressed by its kebab-case URL segment, with per-agent settings."""

    slug = models.SlugField(max_length=120, unique=True, help_text="URL segment: /agents/<slug>/<name>")
    class_path = models.CharField(max_length=255, help_text="Dotted path of the Python agent class")
    title = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    settings = models.JSONField(
        default=dict,
        blank=True,
        help_text="Overrides of class attributes, e.g. {\"model\": \"gpt-4o-mini\", \"max_steps\": 5}",
    )
    enabled = models.BooleanField(default=True)
    # Webhooks (`POST /hooks/<slug>/<name>`) authenticate with a per-agent key; only its hash is kept.
    webhook_key_hash = models.CharField(max_length=64, blank=True, editable=False)
    webhook_key_prefix = models.CharField(max_length=12, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    def issue_webhook_key(self) -> str:
        """A new webhook key (replacing any previous one), returned once and never stored."""
        raw_key = "whk_" + secrets.token_urlsafe(32)
        self.webhook_key_hash = hashlib.sha256(raw_key.encode()).hexdigest()
        self.webhook_key_prefix = raw_key[:12]
        self.save(update_fields=["webhook_key_hash", "webhook_key_prefix", "updated_at"])
        return raw_key

    def accepts_webhook_key(self, raw_key: str) -> bool:
        if not self.webhook_key_hash or not raw_key:
            return False
        return hmac.compare_digest(self.webhook_key_hash, hashlib.sha256(raw_key.encode()).hexdigest())


class Session(models.Model):
    """One agent instance (`/agents/<agent>/<name>`) owned by one user: state, config and a message tree."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="sessions")
    name = models.CharField(max_length=200, help_text="Instance name as it appears in the URL")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="agent_sessions"
    )
    title = models.CharField(max_length=200, blank=True)
    state = models.JSONField(null=True, blank=True)
    # Distinguishes "state explicitly set to a falsy value" (sent on connect) from "no state".
    has_state = models.BooleanField(default=False)
    config = models.JSONField(null=True, blank=True)
    active_leaf = models.ForeignKey(
        "Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    request_context = models.JSONField(
        default=dict, blank=True, help_text="lastClientTools / lastBody reused by continuations"
    )
    terminal = models.JSONField(null=True, blank=True, help_text="{requestId, body} of the last failed turn")
    recovering = models.JSONField(
        null=True, blank=True, help_text="{requestId, at} while an interrupted turn is being recovered"
    )
    allowed_tools = models.JSONField(
        default=list, blank=True, help_text="Tools the owner always allows in this session (no approval asked)"
    )
    turn_lock = models.CharField(max_length=64, blank=True, default="")
    turn_lock_heartbeat = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["agent", "owner", "name"], condition=Q(owner__isnull=False), name="uniq_session_per_owner"
            ),
            models.UniqueConstraint(
                fields=["agent", "name"], condition=Q(owner__isnull=True), name="uniq_anonymous_session"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.agent.slug}/{self.name}"


class Message(models.Model):
    """A node of the session's message tree. The conversation is the path root → active leaf."""

    ROLE_CHOICES = [("user", "user"), ("assistant", "assistant"), ("system", "system")]

    # Every index is written by every turn (its messages, its turn row): a column's own index is
    # left out where an index below or a unique constraint starts with that column.
    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="messages", db_index=False)
    uid = models.CharField(max_length=255, help_text="UIMessage id")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="children", db_index=False)
    role = models.CharField(max_length=16, choices=ROLE_CHOICES)
    parts = models.JSONField(default=list, blank=True)
    metadata = models.JSONField(null=True, blank=True)
    # The message's text, kept in step with `parts` on every save: what full-text search indexes.
    text_content = models.TextField(blank=True, default="", editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["session", "uid"], name="uniq_message_uid")]
        indexes = [
            models.Index(fields=["session", "parent", "id"], name="message_children_idx"),
            models.Index(fields=["parent"], name="message_parent_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.role} {self.uid}"

    def as_ui_message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"id": self.uid, "role": self.role, "parts": self.parts}
        if self.metadata is not None:
            message["metadata"] = self.metadata
        return message

    def save(self, *args: Any, **kwargs: Any) -> None:
        update_fields = kwargs.get("update_fields")
        if update_fields is None or "parts" in update_fields:
            self.text_content = searchable_text(self.parts)
            if update_fields is not None:
                kwargs["update_fields"] = {*update_fields, "text_content"}
        super().save(*args, **kwargs)


def searchable_text(parts: Any) -> str:
    """Text and reasoning of a message's parts, one part per line."""
    if not isinstance(parts, list):
        return ""
    texts = [p.get("text", "") for p in parts if isinstance(p, dict) and p.get("type") in ("text", "reasoning")]
    return "\n".join(t for t in texts if isinstance(t, str) and t)


class Turn(models.Model):
    """One turn of a session, whatever started it: its progress, status and resumable chunk log."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        STREAMING = "streaming"
        COMPLETED = "completed"
        ERROR = "error"
        ABORTED = "aborted"
        SKIPPED = "skipped"
        # Its process died mid-turn; recovery took it over.
        INTERRUPTED = "interrupted"

    class Source(models.TextChoices):
        WEBSOCKET = "websocket"
        HTTP = "http"
        PROGRAMMATIC = "programmatic"
        SCHEDULE = "schedule"
        CONTINUATION = "continuation"
        RECOVERY = "recovery"

    PRE_STREAM = (Status.QUEUED, Status.RUNNING)
    FINISHED = (Status.COMPLETED, Status.ERROR, Status.ABORTED, Status.SKIPPED, Status.INTERRUPTED)

    # Indexed by `uniq_turn_request` and `turn_status_idx` (see Message.session).
    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="turns", db_index=False)
    request_id = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.WEBSOCKET)
    is_continuation = models.BooleanField(default=False)
    trigger = models.CharField(max_length=32, default="submit-message")
    # Admitted while another turn was queued or running (subject to message concurrency).
    overlapping = models.BooleanField(default=False)
    message_uid = models.CharField(max_length=255, blank=True)
    # The request id of the turn a recovery turn (re-)runs; blank for every other turn. Read
    # with the session's id, whose indexes find a session's turns.
    recovery_root = models.CharField(max_length=64, blank=True)
    error_text = models.TextField(blank=True)
    chunk_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # The process running it (see process_liveness.py): a turn whose owner is gone is recovered
    # at once instead of after its heartbeat goes stale.
    owner = models.CharField(max_length=128, null=True, blank=True)
    # What the agent checkpointed with `stash()` while this turn ran; recovery hands it back
    # as `ChatRecoveryContext.recovery_data` if the turn's process dies.
    recovery_data = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["session", "request_id"], name="uniq_turn_request")]
        indexes = [models.Index(fields=["session", "status", "id"], name="turn_status_idx")]

    def __str__(self) -> str:
        return f"{self.request_id} ({self.status})"


class TurnChunk(models.Model):
    """A batch of consecutive stream chunks, stored exactly as broadcast, for resume replays."""

    turn = models.ForeignKey(Turn, on_delete=models.CASCADE, related_name="chunks")
    seq = models.PositiveIntegerField(help_text="Sequence number of the first body in this batch")
    bodies = models.JSONField(default=list)

    class Meta:
        ordering = ["seq"]
        constraints = [models.UniqueConstraint(fields=["turn", "seq"], name="uniq_chunk_batch")]


class ApiToken(models.Model):
    """A per-user token for non-browser clients (`?token=` on WebSocket and HTTP). Only a hash is stored."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="agent_tokens")
    name = models.CharField(max_length=100, default="default")
    prefix = models.CharField(max_length=12, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.user} {self.name} ({self.prefix}…)"

    @staticmethod
    def hash_key(raw_key: str) -> str:
        return hashlib.sha256(raw_key.encode()).hexdigest()

    @classmethod
    def issue(cls, user: Any, name: str = "default") -> tuple[ApiToken, str]:
        """Create a token and return it with the raw key, which is shown once and never stored."""
        raw_key = "agt_" + secrets.token_urlsafe(32)
        token = cls.objects.create(user=user, name=name, prefix=raw_key[:12], key_hash=cls.hash_key(raw_key))
        return token, raw_key


class Schedule(models.Model):
    """A turn (or any agent method) to run later: once after a delay or at a time, or on a
    cron. One-shot schedules run as Celery ETA tasks, cron ones as django-celery-beat tasks."""

    class Kind(models.TextChoices):
        DELAYED = "delayed"
        SCHEDULED = "scheduled"
        CRON = "cron"

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="schedules")
    callback = models.CharField(
        max_length=100, default="send_scheduled_message", help_text="Agent method called with the payload"
    )
    payload = models.JSONField(
        null=True, blank=True, help_text="e.g. {\"text\": \"daily summary\"} for send_scheduled_message"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.SCHEDULED)
    run_at = models.DateTimeField(null=True, blank=True, help_text="When a one-shot schedule runs")
    delay_seconds = models.FloatField(null=True, blank=True, editable=False)
    cron = models.CharField(max_length=100, blank=True, help_text="minute hour day-of-month month day-of-week")
    enabled = models.BooleanField(default=True, help_text="Paused schedules do not run")
    # A one-shot schedule that has run; it stays for its run history.
    done = models.BooleanField(default=False)
    periodic_task = models.OneToOneField(
        "django_celery_beat.PeriodicTask", null=True, blank=True, editable=False, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["session", "done"], name="schedule_pending_idx")]

    def __str__(self) -> str:
        when = self.cron if self.kind == self.Kind.CRON else (self.run_at.isoformat() if self.run_at else "?")
        return f"{self.callback} @ {when}"


class ScheduleRun(models.Model):
    """One execution of a schedule: when, how it ended, and the turn it started."""

    class Status(models.TextChoices):
        RUNNING = "running"
        COMPLETED = "completed"
        ERROR = "error"

    schedule = models.ForeignKey(Schedule, on_delete=models.CASCADE, related_name="runs")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    message_uid = models.CharField(max_length=255, blank=True, help_text="The message the run produced")
    error_text = models.TextField(blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.schedule_id} run {self.pk} ({self.status})"


class ContextBlock(models.Model):
    """The stored content of one context block of a session (think.md §6.3)."""

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="context_blocks")
    label = models.CharField(max_length=100)
    content = models.TextField(blank=True, default="")
    # A block added while the agent runs (`add_context`) has no declaration in code: its
    # settings live here so every later turn, in any process, renders it the same way.
    runtime = models.BooleanField(default=False, help_text="Added at run time (add_context), not declared in code")
    description = models.CharField(max_length=200, blank=True, default="")
    max_tokens = models.PositiveIntegerField(null=True, blank=True)
    readonly = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["session", "label"]
        constraints = [models.UniqueConstraint(fields=["session", "label"], name="uniq_context_block")]

    def __str__(self) -> str:
        return f"{self.session} · {self.label}"


class ContextBlockVersion(models.Model):
    """The content a block had before one write: its history, and what undo restores."""

    block = models.ForeignKey(ContextBlock, on_delete=models.CASCADE, related_name="versions")
    content = models.TextField(blank=True, default="")
    source = models.CharField(max_length=16, default="code", help_text="Who made the write: model, code or admin")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-id"]


class ContextEntry(models.Model):
    """A keyed document of a skills or searchable block."""

    block = models.ForeignKey(ContextBlock, on_delete=models.CASCADE, related_name="entries")
    key = models.CharField(max_length=120)
    title = models.CharField(max_length=200, blank=True)
    content = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]
        constraints = [models.UniqueConstraint(fields=["block", "key"], name="uniq_context_entry")]


class Compaction(models.Model):
    """A summary overlay: the model sees `summary` instead of the messages from `from_message`
    to `to_message` on the path; the originals stay stored and visible (think.md §6.4)."""

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="compactions")
    from_message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="+")
    to_message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="+")
    summary = models.TextField()
    tokens_before = models.PositiveIntegerField(default=0, help_text="Estimated tokens of the summarised range")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"compaction {self.pk} of {self.session}"


class ToolGrant(models.Model):
    """A user always allows a tool of one agent, in every conversation with it (approval
    scope "this agent"; Session.allowed_tools is the scope "this chat")."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tool_grants")
    agent = models.SlugField(max_length=120)
    tool = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["agent", "tool"]
        constraints = [models.UniqueConstraint(fields=["user", "agent", "tool"], name="uniq_tool_grant")]

    def __str__(self) -> str:
        return f"{self.user} always allows {self.agent}.{self.tool}"
