"""Files attached in the composer: checked against size and type limits, kept for their
owner's downloads, and turned into message parts.

Images become `file` parts with a data URL (the AI SDK's own shape), which the provider
conversion sends to vision models as image parts. Text, code and PDF files (as their
extracted text) are copied into the session's workspace under /uploads/; their `file` part
names that path, and the model reads the file with its workspace tools.
"""
from __future__ import annotations

import base64
import io
import mimetypes
import posixpath
import re
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.urls import reverse

from agents_app.storage.models import Session
from agents_app.storage.workspace import Workspace, WorkspaceError
from agents_app.ui.models import Attachment

IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
PDF_TYPE = "application/pdf"
# Extensions read as text whatever type the browser reported (code often arrives as octet-stream).
TEXT_EXTENSIONS = frozenset({
    ".txt", ".md", ".markdown", ".csv", ".tsv", ".json", ".yaml", ".yml", ".toml", ".ini", ".cfg", ".log", ".xml", ".html",
    ".css", ".js", ".mjs", ".ts", ".tsx", ".jsx", ".py", ".rb", ".go", ".rs", ".java", ".kt", ".c", ".h", ".cpp", ".hpp",
    ".cs", ".php", ".sh", ".sql", ".swift", ".r", ".lua", ".pl",
})
# The file picker's `accept`: what check() lets through.
ACCEPT = ",".join(sorted(IMAGE_TYPES | {PDF_TYPE, "text/*"} | TEXT_EXTENSIONS | {".pdf"}))
UPLOAD_DIRECTORY = "/uploads"
METADATA_KEY = "agents"


class AttachmentError(ValueError):
    """A file the page refuses, with a message for the user."""


@dataclass(frozen=True)
class Limits:
    max_files: int
    max_image_bytes: int
    max_file_bytes: int

    @classmethod
    def from_settings(cls) -> Limits:
        return cls(settings.AGENTS_UPLOAD_MAX_FILES, settings.AGENTS_UPLOAD_MAX_IMAGE_BYTES, settings.AGENTS_UPLOAD_MAX_FILE_BYTES)


def _kind(upload: UploadedFile) -> str:
    name = (upload.name or "").lower()
    media_type = (upload.content_type or mimetypes.guess_type(name)[0] or "").lower()
    if media_type in IMAGE_TYPES:
        return "image"
    if media_type == PDF_TYPE or name.endswith(".pdf"):
        return "pdf"
    if media_type.startswith("text/") or posixpath.splitext(name)[1] in TEXT_EXTENSIONS:
        return "text"
    return ""


def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:g} MB"


def _safe_filename(name: str) -> str:
    base = posixpath.basename((name or "").replace("\\", "/"))
    cleaned = re.sub(r"[^\w.\- ]+", "_", base).strip(" .")
    return cleaned[:120] or "file"


def _text_of(kind: str, data: bytes, filename: str) -> str:
    if kind == "pdf":
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError

        try:
            reader = PdfReader(io.BytesIO(data))
            return "\n\n".join(page.extract_text() or "" for page in reader.pages)
        except (PdfReadError, ValueError, KeyError) as error:
            raise AttachmentError(f"{filename} is not a readable PDF.") from error
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise AttachmentError(f"{filename} is not UTF-8 text.") from error


def check(uploads: list[UploadedFile], limits: Limits | None = None) -> None:
    """Refuse the whole message before anything is stored when any file breaks a limit."""
    limits = limits or Limits.from_settings()
    if len(uploads) > limits.max_files:
        raise AttachmentError(f"Attach at most {limits.max_files} files to one message.")
    for upload in uploads:
        kind = _kind(upload)
        if not kind:
            raise AttachmentError(
                f"{upload.name}: this type of file cannot be attached. Images (PNG, JPEG, GIF, WebP), text, code and PDF files can."
            )
        limit = limits.max_image_bytes if kind == "image" else limits.max_file_bytes
        if (upload.size or 0) > limit:
            raise AttachmentError(f"{upload.name} is {_megabytes(upload.size or 0)}; files of this type are limited to {_megabytes(limit)}.")


def _unique_path(workspace: Workspace, filename: str) -> str:
    stem, extension = posixpath.splitext(filename)
    path, counter = f"{UPLOAD_DIRECTORY}/{filename}", 1
    while workspace.get(path) is not None:
        counter += 1
        path = f"{UPLOAD_DIRECTORY}/{stem}-{counter}{extension}"
    return path


def store(session: Session, uploads: list[UploadedFile]) -> list[dict[str, Any]]:
    """Store checked uploads; returns the message's `file` parts."""
    parts: list[dict[str, Any]] = []
    workspace = Workspace(session)
    for upload in uploads:
        kind = _kind(upload)
        data = upload.read()
        filename = _safe_filename(upload.name or "")
        media_type = upload.content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        workspace_path = ""
        if kind != "image":
            text = _text_of(kind, data, filename)
            workspace_path = _unique_path(workspace, filename + (".txt" if kind == "pdf" else ""))
            try:
                workspace.write_text(workspace_path, text)
            except WorkspaceError as refused:
                raise AttachmentError(str(refused)) from refused
        attachment = Attachment.objects.create(
            session=session, filename=filename, media_type=media_type, size=len(data), data=data, workspace_path=workspace_path
        )
        url = f"data:{media_type};base64,{base64.b64encode(data).decode()}" if kind == "image" else download_path(attachment.key)
        metadata: dict[str, Any] = {"attachment": attachment.key}
        if workspace_path:
            metadata["workspacePath"] = workspace_path
        parts.append({"type": "file", "mediaType": media_type, "filename": filename, "url": url, "providerMetadata": {METADATA_KEY: metadata}})
    return parts


def download_path(key: str) -> str:
    return reverse("chat-attachment", args=[key])


def part_metadata(part: dict[str, Any]) -> dict[str, Any]:
    metadata = (part.get("providerMetadata") or {}).get(METADATA_KEY)
    return metadata if isinstance(metadata, dict) else {}
