"""Context blocks (think.md §6.3): named pieces of the system prompt, per session.

A Think agent declares them in `context_blocks`: stored blocks the model may rewrite
(`set_context`), read-only ones, computed ones (a provider callable, e.g. a "soul"), skill
libraries the model loads a document from (`load_context`), and searchable libraries
(`search_context`, which also searches the conversation history itself under the label
"history"). Every write keeps the previous content as a version, so any change can be undone.

Blocks can also be added and removed while the agent runs (`add_context`, `remove_context`);
their settings are stored with the session, so every later turn in any process has them.

The system prompt is assembled from the blocks when a turn starts; writes made during a turn
show from the next turn on (the prompt stays stable within a turn).
"""
from __future__ import annotations

import inspect
import math
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal

import pydantic
from django.db import transaction
from django.db.models import Exists, OuterRef

from agents_app.agents.tools import Tool
from agents_app.protocol.messages import UIMessage
from agents_app.storage import search, transcript
from agents_app.storage.db_threads import db_async
from agents_app.storage.models import ContextBlock, ContextBlockVersion, ContextEntry, Message, Session

if TYPE_CHECKING:
    from agents_app.think.host import ThinkHost

HISTORY_LABEL = "history"
RULE = "═" * 46
UNLOADED_MARK = "[skill unloaded: {key}]"
Provider = Callable[["ThinkHost"], str | Awaitable[str]]


class ContextBlockError(ValueError):
    """A refused write or an unknown block; the message is what the model (or caller) sees."""


class BlockKind(str, Enum):
    TEXT = "text"
    SKILLS = "skills"
    SEARCHABLE = "searchable"


@dataclass(frozen=True)
class ContextBlockSpec:
    """One block of the system prompt. `provider` makes it computed (and read-only)."""

    label: str
    description: str = ""
    max_tokens: int | None = None
    readonly: bool = False
    kind: BlockKind = BlockKind.TEXT
    initial: str = ""
    provider: Provider | None = None

    @property
    def writable(self) -> bool:
        return self.provider is None and not self.readonly


@dataclass(frozen=True)
class BlockView:
    label: str
    description: str
    content: str
    tokens: int
    max_tokens: int | None
    writable: bool
    kind: BlockKind

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "description": self.description,
            "content": self.content,
            "tokens": self.tokens,
            "maxTokens": self.max_tokens,
            "writable": self.writable,
            "kind": self.kind.value,
        }


def estimate_tokens(text: str) -> int:
    """The reference's estimate: the larger of characters/4 and words×1.3, rounded up."""
    if not text:
        return 0
    return math.ceil(max(len(text) / 4, len(text.split()) * 1.3))


def usage_text(tokens: int, max_tokens: int | None) -> str:
    if not max_tokens:
        return f"{tokens} tokens"
    return f"{round(tokens * 100 / max_tokens)}% ({tokens}/{max_tokens} tokens)"


class ContextBlocks:
    """The blocks of one session, as its agent declares them."""

    def __init__(self, agent: ThinkHost) -> None:
        self.agent = agent
        self.session: Session = agent.session
        # Declared blocks win a label clash: a runtime block cannot shadow one written in code.
        declared = {spec.label for spec in agent.context_blocks}
        runtime = [spec for spec in agent.runtime_context_blocks if spec.label not in declared]
        self.specs = {spec.label: spec for spec in (*agent.context_blocks, *runtime)}

    # -- reading ----------------------------------------------------------------------------
    def _spec(self, label: str) -> ContextBlockSpec:
        spec = self.specs.get(label)
        if spec is None:
            raise ContextBlockError(f'Unknown context block "{label}". Known: {", ".join(self.specs) or "none"}.')
        return spec

    def _stored(self, spec: ContextBlockSpec) -> ContextBlock:
        block, _ = ContextBlock.objects.get_or_create(session=self.session, label=spec.label, defaults={"content": spec.initial})
        return block

    async def content(self, spec: ContextBlockSpec) -> str:
        if spec.provider is not None:
            value = spec.provider(self.agent)
            return str(await value if inspect.isawaitable(value) else value)
        if spec.kind is BlockKind.TEXT:
            return (await db_async(self._stored)(spec)).content
        return await db_async(self._catalogue)(spec)

    def _catalogue(self, spec: ContextBlockSpec) -> str:
        entries = list(ContextEntry.objects.filter(block=self._stored(spec)).order_by("key").values_list("key", "title"))
        if spec.kind is BlockKind.SEARCHABLE:
            return f"{len(entries)} entries indexed."
        return "\n".join(f"- {key}: {title}" if title else f"- {key}" for key, title in entries)

    async def views(self) -> list[BlockView]:
        views = []
        for spec in self.specs.values():
            text = await self.content(spec)
            views.append(BlockView(spec.label, spec.description, text, estimate_tokens(text), spec.max_tokens, spec.writable, spec.kind))
        return views

    async def get(self, label: str) -> BlockView:
        spec = self._spec(label)
        text = await self.content(spec)
        return BlockView(spec.label, spec.description, text, estimate_tokens(text), spec.max_tokens, spec.writable, spec.kind)

    async def render(self) -> str:
        """The blocks as a system-prompt section (empty read-only blocks are left out, empty
        writable ones shown so the model knows it may fill them)."""
        sections = []
        for view in await self.views():
            if not view.content and not view.writable and view.kind is BlockKind.TEXT:
                continue
            heading = view.label.upper()
            if view.description:
                heading += f" ({view.description})"
            if view.max_tokens:
                heading += f" [{usage_text(view.tokens, view.max_tokens)}]"
            heading += f" [{_flag(view)}]"
            sections.append(f"{RULE}\n{heading}\n{RULE}\n{view.content}")
        return "\n\n".join(sections)

    # -- writing ----------------------------------------------------------------------------
    async def replace(self, label: str, content: str, *, source: str = "code", check_writable: bool = True) -> BlockView:
        return await db_async(self._write)(label, content, source, check_writable, False)

    async def append(self, label: str, content: str, *, source: str = "code") -> BlockView:
        return await db_async(self._write)(label, content, source, True, True)

    def _write(self, label: str, content: str, source: str, check_writable: bool, append: bool) -> BlockView:
        spec = self._spec(label)
        if spec.kind is not BlockKind.TEXT or spec.provider is not None or (check_writable and spec.readonly):
            raise ContextBlockError(f'Block "{label}" is read-only.')
        with transaction.atomic():
            block = ContextBlock.objects.select_for_update().get(pk=self._stored(spec).pk)
            new = content
            if append:
                separator = "\n" if block.content and not block.content.endswith("\n") else ""
                new = block.content + separator + content
            tokens = estimate_tokens(new)
            if spec.max_tokens and tokens > spec.max_tokens:
                raise ContextBlockError(f'Block "{label}" exceeds maxTokens: {tokens} > {spec.max_tokens}')
            ContextBlockVersion.objects.create(block=block, content=block.content, source=source)
            block.content = new
            block.save(update_fields=["content", "updated_at"])
        return BlockView(spec.label, spec.description, new, tokens, spec.max_tokens, spec.writable, spec.kind)

    async def add_entry(self, label: str, key: str, content: str, title: str = "") -> None:
        spec = self._spec(label)
        if spec.kind is BlockKind.TEXT:
            raise ContextBlockError(f'Block "{label}" holds text, not entries.')

        def store() -> None:
            ContextEntry.objects.update_or_create(block=self._stored(spec), key=key, defaults={"content": content, "title": title})

        await db_async(store)()

    # -- blocks added while the agent runs ------------------------------------------------------
    async def add_context(
        self, label: str, *, description: str = "", max_tokens: int | None = None, readonly: bool = False, content: str = ""
    ) -> BlockView:
        """Add a text block to this session's system prompt from the next turn on (writable by
        the model unless `readonly`); adding it again updates its settings and content."""
        declared = {spec.label for spec in self.agent.context_blocks}
        if label in declared or label == HISTORY_LABEL:
            raise ContextBlockError(f'Block "{label}" is declared in code; choose another label.')
        spec = ContextBlockSpec(label, description, max_tokens, readonly)
        tokens = estimate_tokens(content)
        if max_tokens and tokens > max_tokens:
            raise ContextBlockError(f'Block "{label}" exceeds maxTokens: {tokens} > {max_tokens}')

        def store() -> None:
            settings = {"runtime": True, "description": description, "max_tokens": max_tokens, "readonly": readonly, "content": content}
            ContextBlock.objects.update_or_create(session=self.session, label=label, defaults=settings)

        await db_async(store)()
        self.specs[label] = spec
        self.agent.runtime_context_blocks = (*(s for s in self.agent.runtime_context_blocks if s.label != label), spec)
        return BlockView(label, description, content, tokens, max_tokens, spec.writable, spec.kind)

    async def remove_context(self, label: str) -> bool:
        """Remove a block added with `add_context` (its content too); False if there is none.
        Declared blocks stay: they come back from the code on every turn."""
        if label in {spec.label for spec in self.agent.context_blocks}:
            raise ContextBlockError(f'Block "{label}" is declared in code and cannot be removed at run time.')

        def delete() -> int:
            return ContextBlock.objects.filter(session=self.session, label=label, runtime=True).delete()[0]

        removed = bool(await db_async(delete)())
        self.specs.pop(label, None)
        self.agent.runtime_context_blocks = tuple(s for s in self.agent.runtime_context_blocks if s.label != label)
        return removed

    # -- the model's tools --------------------------------------------------------------------
    def tools(self) -> dict[str, Tool]:
        tools: dict[str, Tool] = {}
        writable = [s.label for s in self.specs.values() if s.writable and s.kind is BlockKind.TEXT]
        skills = [s.label for s in self.specs.values() if s.kind is BlockKind.SKILLS]
        searchable = [HISTORY_LABEL] + [s.label for s in self.specs.values() if s.kind is BlockKind.SEARCHABLE]
        if writable:
            tools["set_context"] = self._set_context_tool(writable)
        if skills:
            tools["load_context"] = self._load_context_tool(skills)
            tools["unload_context"] = self._unload_context_tool(skills)
        tools["search_context"] = self._search_context_tool(searchable)
        return tools

    def _set_context_tool(self, labels: list[str]) -> Tool:
        SetContext = _labelled_input("SetContext", labels, content=(str, ...), action=(Literal["replace", "append"], "replace"))

        async def set_context(label: str, content: str, action: str = "replace") -> str:
            try:
                if action == "append":
                    view = await self.append(label, content, source="model")
                else:
                    view = await self.replace(label, content, source="model")
            except ContextBlockError as error:
                return f"Error: {error}"
            return f"Written to {label}. Usage: {usage_text(view.tokens, view.max_tokens)}"

        return Tool("set_context", "Replace or append to a writable context block of your system prompt.", SetContext, set_context)

    def _load_context_tool(self, labels: list[str]) -> Tool:
        LoadContext = _labelled_input("LoadContext", labels, key=(str, ...))

        async def load_context(label: str, key: str) -> str:
            def lookup() -> str | None:
                return ContextEntry.objects.filter(block__session=self.session, block__label=label, key=key).values_list("content", flat=True).first()

            document = await db_async(lookup)()
            return document if document is not None else f"Not found: {key}"

        return Tool("load_context", "Load a document listed in a skills block of your system prompt.", LoadContext, load_context)

    def _unload_context_tool(self, labels: list[str]) -> Tool:
        UnloadContext = _labelled_input("UnloadContext", labels, key=(str, ...))

        async def unload_context(label: str, key: str) -> str:
            if await db_async(unload_document)(self.session, label, key):
                return f'Unloaded "{key}" from {label}. Context reclaimed.'
            return f'"{key}" is not loaded from {label} (only documents loaded in earlier turns can be unloaded).'

        loaded = ", ".join(sorted(self.agent.loaded_context_keys)) or "none"
        description = f"Unload a document loaded with load_context, to reclaim its context. Loaded now: {loaded}."
        return Tool("unload_context", description, UnloadContext, unload_context)

    def _search_context_tool(self, labels: list[str]) -> Tool:
        SearchContext = _labelled_input("SearchContext", labels, query=(str, ...))

        async def search_context(label: str, query: str) -> str:
            if label == HISTORY_LABEL:
                hits = await db_async(search.search_messages)(query, session_ids=[self.session.pk], limit=10)
                found = [f"[{hit.role} {hit.id}]\n{hit.snippet}" for hit in hits]
            else:
                found = await db_async(self._search_entries)(label, query)
            return "\n\n".join(found) if found else "No results found."

        description = 'Search a searchable context block, or "history" for earlier messages of this conversation.'
        return Tool("search_context", description, SearchContext, search_context)

    def _search_entries(self, label: str, query: str) -> list[str]:
        """Entries containing every word of the query, most matches of the words first."""
        words = [w.lower() for w in search.query_words(query)]
        if not words:
            return []
        entries = ContextEntry.objects.filter(block__session=self.session, block__label=label)
        scored = []
        for key, content in entries.values_list("key", "content"):
            text = content.lower()
            if all(word in text for word in words):
                scored.append((sum(len(re.findall(re.escape(word), text)) for word in words), key, content))
        scored.sort(key=lambda item: (-item[0], item[1]))
        return [f"[{key}]\n{content}" for _, key, content in scored[:10]]


def runtime_specs(session: Session) -> tuple[ContextBlockSpec, ...]:
    """The blocks `add_context` gave this session, in the order they were added."""
    rows = ContextBlock.objects.filter(session=session, runtime=True).order_by("created_at", "id")
    return tuple(ContextBlockSpec(r.label, r.description, r.max_tokens, r.readonly) for r in rows)


def runtime_blocks_stored() -> Exists:
    """Whether a session (the outer query's row) has blocks added at run time: when it has
    none, `runtime_specs` need not be read."""
    return Exists(ContextBlock.objects.filter(session=OuterRef("pk"), runtime=True))


def _loaded_documents(parts: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], str, str]]:
    """The load_context results among `parts` that still carry their document: each part
    with its label and key."""
    for part in parts:
        if part.get("type") != "tool-load_context" or part.get("state") != "output-available":
            continue
        arguments = part.get("input") or {}
        label, key = str(arguments.get("label", "")), str(arguments.get("key", ""))
        if part.get("output") not in (f"Not found: {key}", UNLOADED_MARK.format(key=key)):
            yield part, label, key


def loaded_keys(messages: list[UIMessage]) -> frozenset[str]:
    """"label:key" of every document the model loaded and has not unloaded, read from the
    history itself (`messages`, the conversation a turn runs on) so it holds after a restart
    or in another process."""
    return frozenset(f"{label}:{key}" for message in messages for _, label, key in _loaded_documents(message.get("parts") or []))


def unload_document(session: Session, label: str, key: str) -> bool:
    """Replace the stored load_context results for `label`/`key` by a short marker, so later
    turns no longer carry the document; False when it was not loaded. A load made in the
    running turn is not stored yet, so it is not found here."""
    changed: dict[int, Message] = {}
    for message in transcript.active_path(session):
        for part, loaded_label, loaded_key in _loaded_documents(message.parts or []):
            if (loaded_label, loaded_key) == (label, key):
                part["output"] = UNLOADED_MARK.format(key=key)
                changed[message.pk] = message
    for message in changed.values():
        message.save(update_fields=["parts", "updated_at"])
    return bool(changed)


def _labelled_input(name: str, labels: list[str], **fields: Any) -> type[pydantic.BaseModel]:
    """A tool's input model whose `label` may only name one of `labels`."""
    return pydantic.create_model(name, label=(Literal[tuple(labels)], ...), **fields)  # type: ignore[call-overload]


def _flag(view: BlockView) -> str:
    if view.kind is BlockKind.SKILLS:
        return "loadable"
    if view.kind is BlockKind.SEARCHABLE:
        return "searchable"
    return "writable" if view.writable else "readonly"


def undo_last_write(block: ContextBlock) -> bool:
    """Restore the content before the latest write (the admin's undo); False without history."""
    with transaction.atomic():
        version = ContextBlockVersion.objects.filter(block=block).order_by("-id").first()
        if version is None:
            return False
        block.content = version.content
        block.save(update_fields=["content", "updated_at"])
        version.delete()
    return True
