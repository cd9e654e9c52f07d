"""Upstream error bodies and stream error events in the client's error shape."""

from __future__ import annotations

import json
from typing import Any

from .base import Format, dumps
from .sse import encode

_MAX_MESSAGE = 1000
# Anthropic error types per status (what Anthropic itself answers with).
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
# Anthropic error type -> OpenAI error type.
_OPENAI_TYPES = {
    "invalid_request_error": "invalid_request_error",
    "request_too_large": "invalid_request_error",
    "authentication_error": "authentication_error",
    "permission_error": "permission_error",
    "not_found_error": "not_found_error",
    "rate_limit_error": "rate_limit_error",
    "billing_error": "insufficient_quota",
    "timeout_error": "timeout_error",
    "api_error": "server_error",
    "overloaded_error": "server_error",
}


def anthropic_type(status: int | None) -> str:
    if status is None:
        return "api_error"
    if status in _ANTHROPIC_TYPES:
        return _ANTHROPIC_TYPES[status]
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def openai_type(kind: str | None, status: int | None) -> str:
    if kind in _OPENAI_TYPES:
        return _OPENAI_TYPES[kind]
    if status is not None and 400 <= status < 500:
        return _OPENAI_TYPES.get(anthropic_type(status), "invalid_request_error")
    return "server_error"


def error_fields(doc: Any) -> tuple[str | None, str | None, str | None]:
    """(message, type, code) from an error document of either format, or a loose one."""
    if not isinstance(doc, dict):
        return None, None, None
    error = doc.get("error", doc)
    if isinstance(error, str):
        return error, None, None
    if not isinstance(error, dict):
        return None, None, None
    message = error.get("message") or error.get("detail") or doc.get("message")
    kind, code = error.get("type"), error.get("code")
    return (
        message if isinstance(message, str) else None,
        kind if isinstance(kind, str) else None,
        str(code) if isinstance(code, (str, int)) and not isinstance(code, bool) else None,
    )


def error_document(
    message: str, *, to: Format, kind: str | None, code: str | None, status: int | None
) -> dict[str, Any]:
    """The error object in the client's format; ``kind`` is the upstream's type, if any."""
    if to == "anthropic":
        anthropic_kind = anthropic_type(status) if status is not None else (kind or "api_error")
        return {"type": "error", "error": {"type": anthropic_kind, "message": message}}
    error = {
        "message": message,
        "type": openai_type(kind, status),
        "param": None,
        "code": code or kind,
    }
    return {"error": error}


def translate_error(status: int, body: bytes, *, to: Format) -> bytes:
    """An upstream error answer as the client's format expects it; the status is kept."""
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    message, kind, code = error_fields(doc)
    if not message:
        text = body.decode("utf-8", "replace").strip() if doc is None else ""
        message = text[:_MAX_MESSAGE] or f"the provider answered HTTP {status}"
    return dumps(error_document(message, to=to, kind=kind, code=code, status=status)).encode()


def error_event(
    message: str, *, to: Format, kind: str | None = None, code: str | None = None
) -> bytes:
    """An error inside a stream, so that the client's SDK raises instead of ending cleanly."""
    if to == "anthropic":
        doc = error_document(message, to=to, kind=_anthropic_kind(kind), code=code, status=None)
        return encode(dumps(doc), "error")
    return encode(dumps(error_document(message, to=to, kind=kind, code=code, status=None)))


def _anthropic_kind(kind: str | None) -> str:
    # An OpenAI stream error's type, as near an Anthropic type as there is.
    if kind is not None and kind in _ANTHROPIC_TYPES.values():
        return kind
    return {"insufficient_quota": "billing_error"}.get(kind or "", "api_error")
