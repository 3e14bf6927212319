"""A logging filter that keeps API tokens out of every log line.

Tokens reach URLs as `?token=` (the official client's `query` option) and headers as
`Authorization: Bearer`; access logs and request warnings print both. The filter rewrites
the formatted message, so it works for any logger and argument style.
"""
from __future__ import annotations

import logging
import re

_SECRET = re.compile(r"((?:[?&;]|\b)(?:token|api_key|access_token)=)[^&\s\"'#]+|(Bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)


def redact(text: str) -> str:
    return _SECRET.sub(lambda m: f"{m.group(1)}[redacted]" if m.group(1) else f"{m.group(2)}[redacted]", text)


class RedactTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
