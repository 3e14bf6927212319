"""Class name → URL segment, exactly as the official clients build agent URLs (protocol §1.2)."""
from __future__ import annotations

import re

_UPPER = re.compile(r"[A-Z]")


def agent_segment(class_name: str) -> str:
    if class_name == class_name.upper() and class_name != class_name.lower():
        return class_name.lower().replace("_", "-")
    segment = _UPPER.sub(lambda match: "-" + match.group(0).lower(), class_name)
    segment = segment.removeprefix("-").replace("_", "-")
    return segment.removesuffix("-")
