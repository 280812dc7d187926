"""An API's own words (message and machine code) read from an error body."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def describe_error_body(body: Any) -> tuple[str | None, str | None]:
    """The API's own words from an error body, and the first machine code when there is one.

    Kantata: `{"errors": [{"type", "message", "field"?}]}`.
    Noko: `{"message": "...", "errors": [{"resource", "field", "code"}]}`.
    """
    if not isinstance(body, Mapping):
        return None, None
    parts: list[str] = []
    code: str | None = None
    top = body.get("message")
    if isinstance(top, str) and top.strip():
        parts.append(top.strip())
    errors = body.get("errors")
    if isinstance(errors, list):
        for item in errors:
            if not isinstance(item, Mapping):
                continue
            text = item.get("message")
            item_code = item.get("code")
            where = item.get("field")
            resource = item.get("resource")
            if isinstance(text, str) and text.strip():
                kind = item.get("type")
                prefix = f"{kind}: " if isinstance(kind, str) and kind else ""
                suffix = f" (field {where})" if where else ""
                parts.append(f"{prefix}{text.strip()}{suffix}")
            elif item_code:
                subject = " ".join(str(x) for x in (resource, where) if x)
                parts.append(f"{subject}: {item_code}" if subject else str(item_code))
            if code is None and isinstance(item_code, str) and item_code:
                code = item_code
    elif isinstance(errors, str) and errors.strip():
        parts.append(errors.strip())
    return ("; ".join(parts) or None), code
