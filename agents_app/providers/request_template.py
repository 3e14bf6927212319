"""Model requests built from the SDK's own first build of their kind, not from scratch.

The `openai` SDK builds every request anew: it merges its default, platform and auth
headers into an httpx `Headers` (built five times over), parses and re-merges the base URL
(four times) and normalises the timeout. For a chat request that was ~340 µs of the event
loop's CPU before each first token, about a tenth of a turn's cost up to it in a burst, and
all of it came out the same every time. The one thing that differs between two chat
requests is their JSON body.

So a `RequestTemplates` keeps, per kind of request (method, path, timeout, retry count,
key), what the SDK's own build gave the first time: method, URL, headers and extensions.
Later requests of that kind are that plus their body, encoded by the SDK's own encoder
(its offered tools once per tool object: see `_encoded_body`). A
request the template cannot vouch for (custom headers, query parameters, files, raw content,
`extra_json`, a client that sends an idempotency key, cookies the upstream set on the
client) is built by the SDK as before. `tests/test_request_template.py` holds the requests
sent, byte for byte, against those the SDK's own build sends.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import openai
from openai._models import FinalRequestOptions
from openai._utils._json import openapi_dumps

from agents_app.providers.upstream_transport import http

# Set from the body on each request (httpx adds it for the content given).
_PER_BODY = frozenset({b"content-length", b"transfer-encoding"})


@dataclass(frozen=True)
class _Template:
    method: str
    url: http.URL
    headers: list[tuple[bytes, bytes]]
    extensions: dict[str, Any]

    @classmethod
    def of(cls, request: http.Request) -> _Template:
        headers = [(name, value) for name, value in request.headers.raw if name.lower() not in _PER_BODY]
        return cls(request.method, request.url, headers, dict(request.extensions))

    def request(self, body: bytes) -> http.Request:
        return http.Request(self.method, self.url, headers=self.headers, content=body, extensions=dict(self.extensions))


class RequestTemplates:
    """The templates of one client: `build` is its `_build_request`, and `sdk_build` the SDK's."""

    def __init__(self) -> None:
        self._templates: dict[Hashable, _Template] = {}

    def build(
        self,
        options: FinalRequestOptions,
        retries_taken: int,
        client: openai.AsyncOpenAI,
        sdk_build: Callable[[], http.Request],
    ) -> http.Request:
        kind = _kind(options, retries_taken, client)
        if kind is None:
            return sdk_build()
        template = self._templates.get(kind)
        if template is None:
            request = sdk_build()
            self._templates[kind] = _Template.of(request)
            return request
        return template.request(_encoded_body(options.json_data))


# id(tool schema) → (schema, its JSON). A model call offers every tool of its agent, most of
# its body (fourteen tools are ~6 KB of JSON, ~90 µs to encode), and the schemas are objects
# shared by every call that offers the same tool and only read (Tool.offered_schema; model
# middleware edits copies): each is encoded once. The schema is kept with its JSON, so an id
# is never reused while it is a key; schemas made afresh per call (a middleware's copies,
# the browser's client tools) fill the map until it is cleared.
_encoded_tools: dict[int, tuple[Any, bytes]] = {}
_MAX_ENCODED_TOOLS = 4096


def _encoded_body(body: dict[str, Any]) -> bytes:
    """`openapi_dumps(body)`, byte for byte, with each offered tool's JSON reused."""
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools:
        return openapi_dumps(body)
    members = [
        openapi_dumps(key) + b":" + (b"[" + b",".join(map(_encoded_tool, value)) + b"]" if key == "tools" else openapi_dumps(value))
        for key, value in body.items()
    ]
    return b"{" + b",".join(members) + b"}"


def _encoded_tool(schema: Any) -> bytes:
    known = _encoded_tools.get(id(schema))
    if known is not None and known[0] is schema:
        return known[1]
    if len(_encoded_tools) >= _MAX_ENCODED_TOOLS:
        _encoded_tools.clear()
    encoded = openapi_dumps(schema)
    _encoded_tools[id(schema)] = (schema, encoded)
    return encoded


def _kind(options: FinalRequestOptions, retries_taken: int, client: openai.AsyncOpenAI) -> Hashable | None:
    """What, besides its JSON body, the SDK builds a request from; None when that is more
    than a template holds. (The SDK gives every POST an idempotency key, and sends it
    only when the client names a header for it.)"""
    if (
        not isinstance(options.json_data, dict)
        or client._idempotency_header
        or client._client.cookies
        or options.headers
        or options.params
        or options.files is not None
        or options.content is not None
        or options.extra_json is not None
    ):
        return None
    security = tuple(sorted(options.security.items()))
    return (options.method.lower(), options.url, repr(options.timeout), retries_taken, client.api_key, security)
