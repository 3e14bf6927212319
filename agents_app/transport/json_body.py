"""Reading a request body that must be one JSON object, with the errors every endpoint gives."""
from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from agents_app.protocol import json_safety


class BadJSONBody(ValueError):
    """The body is not a JSON object; the message says why, for the client."""


def json_object(request: HttpRequest) -> dict[str, Any]:
    try:
        payload = json_safety.loads(request.body or b"{}")
    except json_safety.UnsafeJSON as error:
        raise BadJSONBody(f"The body is refused: {error}.") from error
    except (ValueError, UnicodeDecodeError) as error:
        raise BadJSONBody("The body must be JSON.") from error
    if not isinstance(payload, dict):
        raise BadJSONBody("The body must be a JSON object.")
    return payload
