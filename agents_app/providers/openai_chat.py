"""Model access through the `openai` SDK against any OpenAI-compatible base URL: which
model and which client. A model call itself goes through the gateway (gateway/steps.py),
which wraps this client; this floor never imports the gateway.
"""
from __future__ import annotations

import openai
from django.conf import settings

from agents_app.providers.errors import ModelError, describe_error

__all__ = ["ModelError", "default_model", "describe_error", "make_client", "uses_local_model"]


def uses_local_model() -> bool:
    return not (settings.OPENAI_BASE_URL or settings.OPENAI_API_KEY)


def default_model() -> str:
    if settings.OPENAI_MODEL:
        return settings.OPENAI_MODEL
    if uses_local_model():
        from agents_app.providers.local_model import LOCAL_MODEL_NAME

        return LOCAL_MODEL_NAME
    return "gpt-4o-mini"


def make_client() -> openai.AsyncOpenAI:
    """A client per turn: the SDK's connection pool is bound to the event loop that made it."""
    if uses_local_model():
        base_url: str | None = f"http://127.0.0.1:{settings.AGENTS_LOCAL_MODEL_PORT}/v1"
        api_key = "local"
    else:
        base_url = settings.OPENAI_BASE_URL or None
        api_key = settings.OPENAI_API_KEY or "unset"
    return openai.AsyncOpenAI(
        base_url=base_url, api_key=api_key, timeout=settings.AGENTS_MODEL_TIMEOUT, max_retries=0
    )
