"""Reading a request body that must be one JSON object, with the errors every endpoint gives."""
from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest


class BadJSONBody(ValueError):
    """The body is not a JSON object; the message says why, for the client."""


def json_object(request: HttpRequest) -> dict[str, Any]:
    try:
        payload = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError) as error:
        raise BadJSONBody("The body must be JSON.") from error
    if not isinstance(payload, dict):
        raise BadJSONBody("The body must be a JSON object.")
    return payload
