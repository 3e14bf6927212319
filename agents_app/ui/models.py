"""What the chat page keeps besides the conversation: files attached to messages and messages
waiting for the agent to finish its answer."""
from __future__ import annotations

import secrets

from django.db import models
from django.utils import timezone

from agents_app.storage.models import Session


def new_attachment_key() -> str:
    return secrets.token_urlsafe(12)


class Attachment(models.Model):
    """A file the owner attached to a message: the original bytes, for downloads. Text, code
    and PDF files are also copied (as text) into the session's workspace, where the model reads them."""

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="attachments")
    key = models.CharField(max_length=32, unique=True, default=new_attachment_key, editable=False)
    filename = models.CharField(max_length=255)
    media_type = models.CharField(max_length=100)
    size = models.PositiveIntegerField()
    data = models.BinaryField()
    workspace_path = models.CharField(max_length=1024, blank=True, help_text="Where the model reads it; empty for images")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.filename} ({self.session})"


class QueuedMessage(models.Model):
    """A message sent while the agent was answering: shown as a queued bubble, editable and
    cancellable until it is sent (by the agent's message concurrency strategy)."""

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="queued_messages")
    text = models.TextField(blank=True)
    files = models.JSONField(default=list, blank=True, help_text="The file parts of the message")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"queued {self.pk} of {self.session}"
