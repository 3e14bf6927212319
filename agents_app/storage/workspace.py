"""The per-session virtual filesystem Think agents work in (think.md §7): text files and
directories stored as rows, absolute paths, `/` the root, with size limits.

`Workspace(session)` is the synchronous API (call it through `sync_to_async` from async
code); `think/workspace_tools.py` exposes it to the model.
"""
from __future__ import annotations

import posixpath
import re

from django.db import models, transaction
from django.db.models import Q, Sum
from django.utils import timezone

class WorkspaceError(Exception):
    """A filesystem operation failed; the message is what the model reads."""


class WorkspaceEntry(models.Model):
    """A file (with its text) or a directory of one session's workspace."""

    session = models.ForeignKey("agents_app.Session", on_delete=models.CASCADE, related_name="workspace_entries")
    path = models.CharField(max_length=1024, help_text="Absolute path, e.g. /notes/todo.md")
    is_directory = models.BooleanField(default=False)
    content = models.TextField(blank=True, default="")
    size = models.PositiveIntegerField(default=0, help_text="UTF-8 size of the content in bytes")
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["path"]
        constraints = [models.UniqueConstraint(fields=["session", "path"], name="unique_workspace_path")]

    def __str__(self) -> str:
        return self.path + ("/" if self.is_directory and self.path != "/" else "")


def normalize(path: str) -> str:
    """`notes//a/../b.md` → `/notes/b.md`; relative paths start at the root."""
    if not isinstance(path, str) or not path.strip():
        raise WorkspaceError("A path is required.")
    clean = posixpath.normpath("/" + path.strip())
    return "/" + clean.lstrip("/")


def glob_regex(pattern: str) -> re.Pattern[str]:
    """`*` within one path segment, `**` across segments, `?` one character; relative
    patterns are anchored at the root."""
    pattern = pattern if pattern.startswith("/") else "/" + pattern
    out, index = "", 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out, index = out + "(?:.*/)?", index + 3
        elif pattern.startswith("**", index):
            out, index = out + ".*", index + 2
        elif pattern[index] == "*":
            out, index = out + "[^/]*", index + 1
        elif pattern[index] == "?":
            out, index = out + "[^/]", index + 1
        else:
            out, index = out + re.escape(pattern[index]), index + 1
    return re.compile(out + r"\Z")


class Workspace:
    # Limits per session; a subclass (or settings of a deployment) may change them.
    max_file_bytes = 1_000_000
    max_total_bytes = 20_000_000
    max_entries = 5_000

    def __init__(self, session: object) -> None:
        self.session = session

    @property
    def entries(self) -> models.QuerySet[WorkspaceEntry]:
        return WorkspaceEntry.objects.filter(session=self.session)

    def get(self, path: str) -> WorkspaceEntry | None:
        path = normalize(path)
        if path == "/":
            return WorkspaceEntry(session=self.session, path="/", is_directory=True)  # type: ignore[misc]
        return self.entries.filter(path=path).first()

    def read_text(self, path: str) -> str:
        entry = self.get(path)
        if entry is None:
            raise WorkspaceError(f"File not found: {normalize(path)}")
        if entry.is_directory:
            raise WorkspaceError(f"{entry.path} is a directory, not a file")
        return entry.content

    def _make_parents(self, path: str) -> None:
        parent = posixpath.dirname(path)
        missing: list[str] = []
        while parent != "/":
            existing = self.entries.filter(path=parent).first()
            if existing is not None:
                if not existing.is_directory:
                    raise WorkspaceError(f"{parent} is a file, not a directory")
                break
            missing.append(parent)
            parent = posixpath.dirname(parent)
        for directory in reversed(missing):
            WorkspaceEntry.objects.create(session=self.session, path=directory, is_directory=True)

    def write_text(self, path: str, content: str) -> WorkspaceEntry:
        """Create or replace a file, creating its parent directories."""
        path = normalize(path)
        if path == "/":
            raise WorkspaceError("/ is a directory, not a file")
        size = len(content.encode())
        if size > self.max_file_bytes:
            raise WorkspaceError(f"{path} would be {size} bytes; files are limited to {self.max_file_bytes} bytes")
        with transaction.atomic():
            existing = self.entries.select_for_update().filter(path=path).first()
            if existing is not None and existing.is_directory:
                raise WorkspaceError(f"{path} is a directory, not a file")
            others = self.entries.exclude(path=path).aggregate(total=Sum("size"))["total"] or 0
            if others + size > self.max_total_bytes:
                raise WorkspaceError(f"The workspace is limited to {self.max_total_bytes} bytes; writing {path} would exceed it")
            if existing is None:
                if self.entries.count() >= self.max_entries:
                    raise WorkspaceError(f"The workspace is limited to {self.max_entries} files and directories")
                self._make_parents(path)
                return WorkspaceEntry.objects.create(session=self.session, path=path, content=content, size=size)
            existing.content, existing.size, existing.updated_at = content, size, timezone.now()
            existing.save(update_fields=["content", "size", "updated_at"])
            return existing

    def children(self, path: str) -> list[WorkspaceEntry]:
        directory = self.get(path)
        if directory is None:
            raise WorkspaceError(f"Directory not found: {normalize(path)}")
        if not directory.is_directory:
            raise WorkspaceError(f"{directory.path} is a file, not a directory")
        prefix = directory.path.rstrip("/") + "/"
        below = self.entries.filter(path__startswith=prefix)
        return [e for e in below if "/" not in e.path[len(prefix):]]

    def all_entries(self) -> list[WorkspaceEntry]:
        return list(self.entries)

    def delete(self, path: str, *, recursive: bool = False) -> None:
        """Remove a file or directory; a missing path is not an error."""
        path = normalize(path)
        if path == "/":
            raise WorkspaceError("The root directory cannot be deleted")
        below = self.entries.filter(path__startswith=path + "/")
        if below.exists() and not recursive:
            raise WorkspaceError(f"{path} is a directory that is not empty; pass recursive to delete it with its contents")
        self.entries.filter(Q(path=path) | Q(path__startswith=path + "/")).delete()
