"""Extensions the model loaded into a session (sandbox/extensions.py), kept with the session."""
from __future__ import annotations

from django.db import models
from django.utils import timezone

from agents_app.storage.models import Session


class SessionExtension(models.Model):
    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="extensions")
    name = models.CharField(max_length=31)
    source = models.TextField(help_text="JavaScript evaluating to ({ tools: { … } })")
    manifest = models.JSONField(default=dict, help_text="name, version, description, permissions, context, tools")
    tools = models.JSONField(default=dict, help_text="Tool name → {description, parameters}, read from the source")
    loaded_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["session", "name"]
        constraints = [models.UniqueConstraint(fields=["session", "name"], name="unique_extension_per_session")]

    def __str__(self) -> str:
        return f"{self.name} ({self.session})"
