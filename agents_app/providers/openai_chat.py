"""Model access through the `openai` SDK against any OpenAI-compatible base URL: which
model and which client. A model call itself goes through the gateway (gateway/steps.py),
which wraps this client; this floor never imports the gateway.
"""
from __future__ import annotations

import openai
from django.conf import settings

from agents_app.providers import clients
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
    """This event loop's client for the configured model (the bundled local one without
    OPENAI_* settings), shared with every other call: see providers/clients.py."""
    if uses_local_model():
        base_url: str | None = f"http://127.0.0.1:{settings.AGENTS_LOCAL_MODEL_PORT}/v1"
        api_key = "local"
    else:
        base_url = settings.OPENAI_BASE_URL or None
        api_key = settings.OPENAI_API_KEY or "unset"
    return clients.shared(base_url, api_key, settings.AGENTS_MODEL_TIMEOUT)
