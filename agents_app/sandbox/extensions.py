"""Extensions: bundles of tools written in JavaScript, run in the QuickJS sandbox.

An extension is a manifest plus source whose value is `({ tools: { add: { description,
parameters, execute } } })`. Its tools are offered as `<extension>_<tool>` (e.g. `math_add`);
each call evaluates the source in a fresh sandbox and awaits `execute(input)`. A manifest may
declare context blocks, registered as `<extension>_<label>`. Network access is off unless the
manifest grants it (`permissions.network`: True or a list of host names); without it `fetch`
does not exist in the sandbox.

Developers declare extensions in `get_extensions()`; with `create_extension_tools(agent.extensions)`
the model can also load its own (`load_extension`), kept with the session and offered from the
next step on.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import pydantic
from django.db.models import Exists, OuterRef

from agents_app.think.context_blocks import ContextBlockSpec
from agents_app.agents.tools import Tool, ToolInputError
from agents_app.sandbox.models import SessionExtension
from agents_app.sandbox.quickjs_runner import Bridge, Limits, SandboxCodeError, SandboxLimitError, run_js
from agents_app.storage.db_threads import db_async
from agents_app.storage.models import Session

if TYPE_CHECKING:
    from agents_app.think.host import ThinkHost

_NAME = re.compile(r"^[a-z][a-z0-9]{0,30}$")
_TOOL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,40}$")
MAX_SOURCE_CHARS = 64_000
MAX_FETCH_BYTES = 256_000


class ExtensionError(ValueError):
    """A manifest or source that cannot be loaded; the message is what the model reads."""


@dataclass(frozen=True)
class ExtensionContext:
    label: str
    description: str = ""
    max_tokens: int | None = None


@dataclass(frozen=True)
class Extension:
    name: str
    source: str
    description: str = ""
    version: str = "1.0.0"
    network: bool | tuple[str, ...] = False
    context: tuple[ExtensionContext, ...] = ()
    # Tool name → {description, parameters}, read from the source when the extension is loaded.
    tools: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def manifest(self) -> dict[str, Any]:
        return {
            "name": self.name, "version": self.version, "description": self.description,
            "permissions": {"network": list(self.network) if isinstance(self.network, tuple) else self.network},
            "context": [{"label": c.label, "description": c.description, "maxTokens": c.max_tokens} for c in self.context],
            "tools": sorted(self.tools),
        }


def extension(
    name: str,
    source: str,
    *,
    description: str = "",
    version: str = "1.0.0",
    permissions: Mapping[str, Any] | None = None,
    context: list[Mapping[str, Any]] | None = None,
) -> Extension:
    """An extension from its manifest fields (as `get_extensions()` returns them); validated."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ExtensionError("An extension name is 1-31 lowercase letters and digits, starting with a letter")
    if not isinstance(source, str) or not source.strip():
        raise ExtensionError("An extension needs JavaScript source")
    if len(source) > MAX_SOURCE_CHARS:
        raise ExtensionError(f"The source is longer than {MAX_SOURCE_CHARS} characters")
    network = (permissions or {}).get("network", False)
    if isinstance(network, list):
        network = tuple(str(host).lower() for host in network)
    elif not isinstance(network, bool):
        raise ExtensionError("permissions.network is true, false or a list of host names")
    blocks = tuple(
        ExtensionContext(str(c["label"]), str(c.get("description", "")), c.get("maxTokens") or c.get("max_tokens"))
        for c in context or []
    )
    return Extension(name, source, description, version, network, blocks)


def _namespace(extension: Extension) -> dict[str, Mapping[str, Bridge]]:
    if not extension.network:
        return {}
    allowed = extension.network

    async def fetch(args: list[Any]) -> dict[str, Any]:
        url = args[0] if args else None
        options = args[1] if len(args) > 1 and isinstance(args[1], dict) else {}
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
            raise ValueError("fetch needs an http(s) URL")
        host = (urlsplit(url).hostname or "").lower()
        if isinstance(allowed, tuple) and host not in allowed:
            raise PermissionError(f"{host} is not among the hosts this extension may reach")
        async with httpx.AsyncClient(timeout=10, follow_redirects=False) as client:
            response = await client.request(str(options.get("method", "GET")), url, content=options.get("body"), headers=options.get("headers"))
        return {"status": response.status_code, "headers": dict(response.headers), "text": response.text[:MAX_FETCH_BYTES]}

    return {"net": {"fetch": fetch}}


# Inside the sandbox, `fetch(url, init)` resolves to {status, headers, text, json()} when the
# extension has the network permission.
_FETCH_SHIM = "globalThis.fetch = async (url, init) => { const r = await net.fetch(url, init); return { ...r, ok: r.status < 400, json: async () => JSON.parse(r.text) }; };"


async def _evaluate(extension: Extension, code: str, limits: Limits) -> Any:
    namespaces = _namespace(extension)
    setup = (_FETCH_SHIM if namespaces else "") + f"globalThis.__extension = ({extension.source}\n);"
    try:
        return (await run_js(code, namespaces, limits, setup_source=setup)).result
    except SandboxLimitError as error:
        raise RuntimeError(str(error)) from None
    except SandboxCodeError as error:
        raise RuntimeError(f"Extension {extension.name} failed: {error}") from None


async def describe_tools(extension: Extension, limits: Limits) -> dict[str, dict[str, Any]]:
    """Run the source once to read its tools' descriptions and parameter schemas."""
    found = await _evaluate(
        extension,
        "const tools = (__extension && __extension.tools) || {};"
        "return Object.fromEntries(Object.entries(tools).map(([n, t]) => [n, { description: String(t.description || ''),"
        " parameters: t.parameters || { type: 'object', properties: {} }, callable: typeof t.execute === 'function' }]));",
        limits,
    )
    if not isinstance(found, dict) or not found:
        raise ExtensionError(f"Extension {extension.name} defines no tools: its source must evaluate to ({{ tools: {{ … }} }})")
    for tool_name, spec in found.items():
        if not _TOOL_NAME.match(tool_name) or not spec.get("callable"):
            raise ExtensionError(f"Extension tool {tool_name!r} needs a simple name and an execute function")
        if not isinstance(spec["parameters"], dict) or spec["parameters"].get("type", "object") != "object":
            raise ExtensionError(f"Extension tool {tool_name!r}: parameters must be a JSON object schema")
    return found


class _AnyInput(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")


class ExtensionTool(Tool):
    def __init__(self, extension: Extension, tool_name: str, spec: Mapping[str, Any], limits: Limits) -> None:
        super().__init__(
            name=f"{extension.name}_{tool_name}", description=spec.get("description") or f"{tool_name} ({extension.name} extension)",
            input_model=_AnyInput, execute=self._call,
        )
        self.extension = extension
        self.tool_name = tool_name
        self.schema = dict(spec.get("parameters") or {"type": "object", "properties": {}})
        self.limits = limits

    @property
    def parameters(self) -> dict[str, Any]:
        return self.schema

    def validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        missing = [name for name in self.schema.get("required", []) if name not in arguments]
        if missing:
            raise ToolInputError(f"Invalid arguments for tool {self.name}: missing {', '.join(missing)}")
        return arguments

    async def _call(self, **arguments: Any) -> Any:
        return await _evaluate(
            self.extension, f"return await __extension.tools[{json.dumps(self.tool_name)}].execute({json.dumps(arguments)});", self.limits
        )


def _stored_extensions(session: Session) -> list[SessionExtension]:
    return list(SessionExtension.objects.filter(session=session))


def extensions_stored() -> Exists:
    """Whether a session (the outer query's row) keeps extensions the model loaded."""
    return Exists(SessionExtension.objects.filter(session=OuterRef("pk")))


class ExtensionManager:
    """The extensions of one agent instance: declared by the developer, loaded by the model."""

    def __init__(self, agent: ThinkHost, limits: Limits | None = None) -> None:
        self.agent = agent
        self.limits = limits or Limits()
        self.declared = {e.name: e for e in agent.get_extensions()}
        self.loaded: dict[str, Extension] = {}
        self._tools: dict[str, Tool] = {}
        self._register_context(self.declared.values())

    def _register_context(self, extensions: Any) -> None:
        blocks = tuple(
            ContextBlockSpec(f"{e.name}_{c.label}", description=c.description, max_tokens=c.max_tokens)
            for e in extensions for c in e.context
        )
        known = {spec.label for spec in self.agent.context_blocks}
        self.agent.context_blocks = (*self.agent.context_blocks, *(b for b in blocks if b.label not in known))

    def all(self) -> dict[str, Extension]:
        return {**self.declared, **self.loaded}

    def tools(self) -> dict[str, Tool]:
        """The tools of every extension read so far (see `prepare`)."""
        return dict(self._tools)

    def _add_tools(self, extension: Extension) -> None:
        for tool_name, spec in extension.tools.items():
            tool = ExtensionTool(extension, tool_name, spec, self.limits)
            self._tools[tool.name] = tool

    async def prepare(self, *, any_stored: bool = True) -> None:
        """At the start of a turn: read the declared and the session's stored extensions
        (`any_stored=False`: the caller knows the session keeps none, see `extensions_stored`)."""
        stored = await db_async(_stored_extensions)(self.agent.session) if any_stored else []
        for row in stored:
            if row.name not in self.declared:
                restored = extension(
                    row.name, row.source, description=row.manifest.get("description", ""), version=row.manifest.get("version", "1.0.0"),
                    permissions=row.manifest.get("permissions"), context=row.manifest.get("context"),
                )
                self.loaded[row.name] = Extension(**{**restored.__dict__, "tools": row.tools})
        self._register_context(self.loaded.values())
        for bundle in self.all().values():
            if not bundle.tools:
                bundle = Extension(**{**bundle.__dict__, "tools": await describe_tools(bundle, self.limits)})
                self.declared[bundle.name] = bundle
            self._add_tools(bundle)

    async def load(self, extension: Extension) -> Extension:
        """Keep a new extension with the session; its tools are offered from the next step."""
        if extension.name in self.declared:
            raise ExtensionError(f"{extension.name} is built in and cannot be replaced")
        described = Extension(**{**extension.__dict__, "tools": await describe_tools(extension, self.limits)})
        manifest = described.manifest()
        await db_async(SessionExtension.objects.update_or_create)(
            session=self.agent.session, name=described.name,
            defaults={"source": described.source, "manifest": manifest, "tools": dict(described.tools)},
        )
        self.loaded[described.name] = described
        self._add_tools(described)
        return described


class LoadExtensionInput(pydantic.BaseModel):
    name: str = pydantic.Field(description="Lowercase letters and digits; the tools are offered as <name>_<tool>")
    source: str = pydantic.Field(description="JavaScript evaluating to ({ tools: { toolName: { description, parameters, execute: async (input) => result } } })")
    description: str = ""


def create_extension_tools(manager: ExtensionManager) -> dict[str, Tool]:
    """`load_extension` and `list_extensions` for the model. Extensions it loads have no
    network access and are kept with the session."""

    async def load_extension(name: str, source: str, description: str = "") -> dict[str, Any]:
        try:
            loaded = await manager.load(extension(name, source, description=description))
        except ExtensionError as error:
            return {"error": str(error)}
        return {"loaded": loaded.name, "tools": [f"{loaded.name}_{t}" for t in sorted(loaded.tools)], "note": "The tools are available from your next step."}

    def list_extensions() -> list[dict[str, Any]]:
        return [e.manifest() for e in manager.all().values()]

    return {
        "load_extension": Tool(
            "load_extension", "Load a JavaScript extension that adds tools (sandboxed; no network).",
            LoadExtensionInput, load_extension,
        ),
        "list_extensions": Tool("list_extensions", "List the loaded extensions and their tools.", pydantic.create_model("ListExtensionsInput"), list_extensions),
    }
