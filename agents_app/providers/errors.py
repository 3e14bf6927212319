"""Model-call failures as users see them: a sentence, no stack trace, never a key."""
from __future__ import annotations

from collections.abc import Iterable

import openai

REDACTED = "[redacted]"


class ModelError(Exception):
    """A model call failed; the message is what the user sees in the error frame."""


def describe_error(error: Exception) -> str:
    """A user-readable sentence for an upstream failure."""
    if isinstance(error, openai.APITimeoutError):
        return "The model did not answer in time. Please try again."
    if isinstance(error, openai.APIConnectionError):
        return "The model service could not be reached. Please try again later."
    if isinstance(error, openai.APIStatusError):
        detail = ""
        body = error.body
        if isinstance(body, dict):
            inner = body.get("error", body)
            if isinstance(inner, dict) and isinstance(inner.get("message"), str):
                detail = inner["message"]
        detail = detail or error.message
        return f"The model service returned an error (HTTP {error.status_code}): {detail}"
    if isinstance(error, openai.APIError):
        return f"The model service returned an error: {error.message}"
    return "The model call failed."


def redact(text: str, secrets: Iterable[str]) -> str:
    """Upstreams sometimes echo the key they rejected: it must not reach a user or a log."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    return text


# How providers say a request is longer than the model's context window.
_OVERFLOW_CODES = frozenset({"context_length_exceeded", "string_above_max_length"})
_OVERFLOW_PHRASES = (
    "context_length_exceeded",
    "maximum context length",
    "prompt is too long",
    "exceeds the context window",
    "exceed context limit",
    "input is too long",
    "reduce the length of the messages",
)


def is_context_overflow(error: BaseException) -> bool:
    """The upstream refused the request as too long for the model (OpenAI's
    `context_length_exceeded` 400, or the phrases other providers use)."""
    cause = error.__cause__
    if isinstance(cause, openai.APIStatusError) and isinstance(cause.body, dict):
        inner = cause.body.get("error", cause.body)
        if isinstance(inner, dict) and inner.get("code") in _OVERFLOW_CODES:
            return True
    text = str(error).lower()
    return any(phrase in text for phrase in _OVERFLOW_PHRASES)
