"""Structured output: ask the model for JSON matching a pydantic model and get a validated
object back (the AI SDK's `generateObject`). Usable anywhere, tools included.

    class Forecast(BaseModel):
        city: str
        temperature_c: float

    forecast = await generate_object(None, Forecast, "Tomorrow's weather in Oslo")

Every attempt goes through the gateway like any model call. The request uses `response_format` (`json_schema`, or `json_object` for endpoints without
schema support). An answer that is not valid JSON or does not match the schema is sent back
to the model with the problem, up to `retries` times, before `ObjectGenerationError`.
"""
from __future__ import annotations

import json
from typing import Any, Literal, TypeVar

import pydantic

from agents_app.gateway.text import generate_text

T = TypeVar("T", bound=pydantic.BaseModel)


class ObjectGenerationError(Exception):
    """The model did not produce a valid object; `text` is its last answer."""

    def __init__(self, message: str, text: str) -> None:
        super().__init__(message)
        self.text = text


def _problem(text: str, schema: type[pydantic.BaseModel]) -> tuple[pydantic.BaseModel | None, str]:
    try:
        return schema.model_validate_json(text), ""
    except pydantic.ValidationError as error:
        if any(item["type"] == "json_invalid" for item in error.errors()):
            return None, f"The answer was not valid JSON: {error.errors()[0]['msg']}"
        details = "; ".join(f"{'.'.join(str(p) for p in item['loc']) or 'object'}: {item['msg']}" for item in error.errors())
        return None, f"The JSON did not match the schema: {details}"


def _response_format(schema: type[pydantic.BaseModel], mode: Literal["json_schema", "json_object"]) -> dict[str, Any]:
    if mode == "json_object":
        return {"type": "json_object"}
    return {"type": "json_schema", "json_schema": {"name": schema.__name__, "schema": schema.model_json_schema()}}


async def generate_object(
    model: str | None,
    schema: type[T],
    prompt: str | list[dict[str, Any]],
    *,
    system: str | None = None,
    mode: Literal["json_schema", "json_object"] = "json_schema",
    retries: int = 1,
    gateway: dict[str, Any] | None = None,
) -> T:
    """One object of type `schema` from the model (`None` = the default model). `prompt` is
    a user text or a list of chat-completions messages. Each attempt is a model call through
    the gateway (routes, cache, limits, call log); `gateway` holds per-call options."""
    instructions = (
        f"{system + chr(10) + chr(10) if system else ''}Answer with a single JSON object matching this JSON schema, "
        f"and nothing else:\n{json.dumps(schema.model_json_schema())}"
    )
    conversation = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    messages: list[dict[str, Any]] = [{"role": "system", "content": instructions}, *conversation]
    text = ""
    problem = ""
    for _ in range(retries + 1):
        answer = await generate_text(messages, model=model, gateway=gateway, extra={"response_format": _response_format(schema, mode)})
        text = answer.text
        value, problem = _problem(text, schema)
        if value is not None:
            return value  # type: ignore[return-value]
        messages += [{"role": "assistant", "content": text}, {"role": "user", "content": f"{problem} Answer again with only the JSON object."}]
    raise ObjectGenerationError(f"The model did not produce a valid {schema.__name__}: {problem}", text)
