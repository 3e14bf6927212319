"""Model-call failures as users see them: a sentence, no stack trace, never a key."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

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


def is_context_overflow(error: BaseException | str) -> bool:
    """The upstream refused the request as too long for the model (OpenAI's
    `context_length_exceeded` 400, or the phrases other providers use)."""
    if _status_error(error) is not None and _error_code(error) in _OVERFLOW_CODES:
        return True
    return _mentions(error, _OVERFLOW_PHRASES)


# What an agent's `classify_chat_error` may answer (think.md §5, §9.4).
ChatErrorClassification = Literal["context_overflow", "rate_limit", "transient", "fatal", "unknown"]

_RATE_LIMIT_PHRASES = ("rate limit", "rate_limit", "too many requests", "http 429", "quota exceeded", "tokens per min")
_TRANSIENT_PHRASES = ("overloaded", "temporarily unavailable", "timed out", "did not answer in time", "could not be reached", "try again later")


def _status_error(error: BaseException | str) -> openai.APIStatusError | None:
    """The upstream's HTTP error behind a failure: ModelError keeps it as its cause."""
    for candidate in (error, getattr(error, "__cause__", None)):
        if isinstance(candidate, openai.APIStatusError):
            return candidate
    return None


def _error_code(error: BaseException | str) -> object:
    status = _status_error(error)
    body = status.body if status is not None else None
    inner = body.get("error", body) if isinstance(body, dict) else None
    return inner.get("code") if isinstance(inner, dict) else None


def _mentions(error: BaseException | str, phrases: tuple[str, ...]) -> bool:
    text = str(error).lower()
    return any(phrase in text for phrase in phrases)


def classify_error(error: BaseException | str) -> ChatErrorClassification | None:
    """The ready-made classifier: what kind of failure an upstream error (or its text) is,
    from the HTTP status and the phrases common providers use; None when nothing matches."""
    if is_context_overflow(error):
        return "context_overflow"
    status = _status_error(error)
    code = status.status_code if status is not None else None
    if code == 429 or _mentions(error, _RATE_LIMIT_PHRASES):
        return "rate_limit"
    cause = getattr(error, "__cause__", None)
    if isinstance(error, openai.APIConnectionError) or isinstance(cause, openai.APIConnectionError):
        return "transient"  # APITimeoutError is a connection error too
    if (code is not None and code >= 500) or _mentions(error, _TRANSIENT_PHRASES):
        return "transient"
    if code is not None and code in (400, 401, 403, 404, 422):
        return "fatal"  # the same request fails the same way again
    return None
