"""The workspace tools every Think turn gets (think.md §7): read, write, edit, list, find,
grep and delete over the session's virtual filesystem. Results are JSON objects; failures
are `{"error": …}` results the model reads, never failed turns. The optional `bash` tool is
not provided.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from agents_app.agents.tools import Tool
from agents_app.storage.db_threads import db_async
from agents_app.storage.workspace import Workspace, WorkspaceError, glob_regex, normalize

MAX_LINE_CHARS = 2000
MAX_READ_LINES = 2000
MAX_LISTED = 200
MAX_GREP_MATCHES = 200
MAX_GREP_FILE_BYTES = 1_000_000


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / (1024 * 1024):.1f} MB"


def _line_count(text: str) -> int:
    return len(text.splitlines()) if text else 0


class ReadInput(BaseModel):
    path: str = Field(description="Absolute path of the file")
    offset: int | None = Field(None, ge=1, description="1-based first line to read")
    limit: int | None = Field(None, ge=1, description="Number of lines to read")


class WriteInput(BaseModel):
    path: str = Field(description="Absolute path of the file; parent directories are created")
    content: str


class EditInput(BaseModel):
    path: str
    old_string: str = Field(description="Exact text to replace; empty to create a new file")
    new_string: str


class ListInput(BaseModel):
    path: str = "/"
    limit: int = Field(200, ge=1, le=1000)
    offset: int = Field(0, ge=0)


class FindInput(BaseModel):
    pattern: str = Field(description="Glob: * within a directory, ** across directories, ? one character")


class GrepInput(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    query: str = Field(description="Regular expression, or literal text with fixedString")
    include: str = Field("**/*", description="Glob of the files to search")
    fixed_string: bool = Field(False, alias="fixedString")
    case_sensitive: bool = Field(False, alias="caseSensitive")
    context_lines: int = Field(0, ge=0, le=10, alias="contextLines")


class DeleteInput(BaseModel):
    path: str
    recursive: bool = False


def _read(workspace: Workspace, path: str, offset: int | None, limit: int | None) -> dict[str, Any]:
    text = workspace.read_text(path)
    lines = text.splitlines()
    first = (offset or 1) - 1
    window = lines[first : first + limit] if limit else lines[first:]
    shown = window[:MAX_READ_LINES]
    numbered = [
        f"{first + index + 1}\t{line[:MAX_LINE_CHARS] + '... (truncated)' if len(line) > MAX_LINE_CHARS else line}"
        for index, line in enumerate(shown)
    ]
    if len(window) > len(shown):
        numbered.append(f"... ({len(window) - len(shown)} more lines truncated)")
    result: dict[str, Any] = {"path": normalize(path), "content": "\n".join(numbered), "totalLines": len(lines)}
    if offset is not None or limit is not None:
        result.update(fromLine=first + 1, toLine=first + len(shown))
    return result


def _write(workspace: Workspace, path: str, content: str) -> dict[str, Any]:
    entry = workspace.write_text(path, content)
    return {"path": entry.path, "bytesWritten": entry.size, "lines": _line_count(content)}


def _fuzzy(old: str) -> re.Pattern[str]:
    """`old` with every run of spaces/tabs matching any such run, and any line ending."""
    lines = old.replace("\r\n", "\n").split("\n")
    parts = ["[ \\t]+".join(re.escape(token) for token in re.split(r"[ \t]+", line)) for line in lines]
    return re.compile("\\r?\\n".join(parts))


def _edit(workspace: Workspace, path: str, old_string: str, new_string: str) -> dict[str, Any]:
    path = normalize(path)
    if old_string == "":
        if workspace.get(path) is not None:
            raise WorkspaceError(f"{path} already exists; give old_string to edit it")
        workspace.write_text(path, new_string)
        return {"path": path, "created": True, "lines": _line_count(new_string)}
    text = workspace.read_text(path)
    count = text.count(old_string)
    if count > 1:
        raise WorkspaceError(f"old_string occurs {count} times in {path}; include more surrounding text so that it matches exactly once")
    fuzzy = False
    if count == 1:
        updated = text.replace(old_string, new_string, 1)
    else:
        matches = list(_fuzzy(old_string).finditer(text))
        if not matches:
            raise WorkspaceError(f"old_string was not found in {path}; read the file and copy the text exactly")
        if len(matches) > 1:
            raise WorkspaceError(f"old_string matches {len(matches)} places in {path} when whitespace is ignored; include more surrounding text")
        match, fuzzy = matches[0], True
        updated = text[: match.start()] + new_string + text[match.end() :]
    workspace.write_text(path, updated)
    result: dict[str, Any] = {"path": path, "replaced": True, "lines": _line_count(updated)}
    if fuzzy:
        result["fuzzyMatch"] = True
    return result


def _list(workspace: Workspace, path: str, limit: int, offset: int) -> dict[str, Any]:
    children = workspace.children(path)
    names = [
        f"{e.path.rsplit('/', 1)[1]}/" if e.is_directory else f"{e.path.rsplit('/', 1)[1]} ({_size(e.size)})"
        for e in children
    ]
    return {"path": normalize(path), "count": len(names), "entries": names[offset : offset + limit]}


def _find(workspace: Workspace, pattern: str) -> dict[str, Any]:
    matcher = glob_regex(pattern)
    found = [e.path + ("/" if e.is_directory else "") for e in workspace.all_entries() if matcher.match(e.path)]
    result: dict[str, Any] = {"pattern": pattern, "count": len(found), "files": found[:MAX_LISTED]}
    if len(found) > MAX_LISTED:
        result.update(truncated=True, showing=MAX_LISTED)
    return result


def _grep(workspace: Workspace, query: str, include: str, fixed_string: bool, case_sensitive: bool, context_lines: int) -> dict[str, Any]:
    try:
        regex = re.compile(re.escape(query) if fixed_string else query, 0 if case_sensitive else re.IGNORECASE)
    except re.error as error:
        return {"error": f"Invalid regex: {error}"}
    included = glob_regex(include)
    files = [e for e in workspace.all_entries() if not e.is_directory and included.match(e.path)]
    searched, skipped, with_matches = 0, 0, 0
    matches: list[Any] = []
    truncated = False
    for entry in files:
        if entry.size > MAX_GREP_FILE_BYTES:
            skipped += 1
            continue
        searched += 1
        lines = entry.content.splitlines()
        hits = [number for number, line in enumerate(lines) if regex.search(line)]
        with_matches += bool(hits)
        for number in hits:
            if len(matches) == MAX_GREP_MATCHES:
                truncated = True
                break
            if context_lines:
                window = range(max(0, number - context_lines), min(len(lines), number + context_lines + 1))
                context = [f"{'>' if n == number else ' '} {n + 1}\t{lines[n]}" for n in window]
                matches.append({"file": entry.path, "line": number + 1, "context": context})
            else:
                matches.append(f"{entry.path}:{number + 1}: {lines[number]}")
    result: dict[str, Any] = {
        "query": query,
        "filesSearched": searched,
        "filesWithMatches": with_matches,
        "totalMatches": len(matches),
        "matches": matches,
    }
    if truncated:
        result["truncated"] = True
    if skipped:
        result.update(filesSkipped=skipped, note=f"Files over {MAX_GREP_FILE_BYTES} bytes were not searched.")
    return result


def _delete(workspace: Workspace, path: str, recursive: bool) -> dict[str, Any]:
    workspace.delete(path, recursive=recursive)
    return {"deleted": normalize(path)}


def _bound(workspace: Workspace, operation: Callable[..., dict[str, Any]]) -> Callable[..., Any]:
    """`operation` over this workspace, in a thread (the ORM is synchronous), with
    filesystem errors turned into results the model reads."""

    async def execute(**arguments: Any) -> dict[str, Any]:
        try:
            return await db_async(operation)(workspace, **arguments)
        except WorkspaceError as error:
            return {"error": str(error)}

    return execute


_TOOLS: list[tuple[str, str, type[pydantic.BaseModel], Callable[..., dict[str, Any]]]] = [
    ("read", "Read a text file of the workspace, with line numbers.", ReadInput, _read),
    ("write", "Create or overwrite a file of the workspace.", WriteInput, _write),
    ("edit", "Replace one exact occurrence of old_string with new_string in a file (empty old_string creates the file).", EditInput, _edit),
    ("list", "List a directory of the workspace.", ListInput, _list),
    ("find", "Find files and directories of the workspace by glob pattern.", FindInput, _find),
    ("grep", "Search the workspace's files for a regular expression or literal text; matches come with line numbers.", GrepInput, _grep),
    ("delete", "Delete a file, or a directory with recursive.", DeleteInput, _delete),
]


def workspace_tools(workspace: Workspace) -> dict[str, Tool]:
    return {
        name: Tool(name=name, description=description, input_model=model, execute=_bound(workspace, operation))
        for name, description, model, operation in _TOOLS
    }
