"""Translation between OpenAI chat completions and Anthropic messages: pure, no I/O."""

from __future__ import annotations

import time

from .answers import to_anthropic_answer, to_openai_answer
from .anthropic_request import to_anthropic_request
from .base import FORMATS, JSON, Carry, Format, TranslationError
from .endpoints import (
    ANTHROPIC_VERSION,
    DROPPED_HEADER,
    RESPONSE_HEADERS_TO_DROP,
    HeaderChanges,
    content_type,
    is_translatable,
    needs_translation,
    path_format,
    request_headers,
    translated_path,
)
from .errors import translate_error
from .openai_request import to_openai_request

__all__ = [
    "ANTHROPIC_VERSION",
    "DROPPED_HEADER",
    "FORMATS",
    "RESPONSE_HEADERS_TO_DROP",
    "Format",
    "HeaderChanges",
    "TranslationError",
    "content_type",
    "is_translatable",
    "needs_translation",
    "path_format",
    "request_headers",
    "translate_answer",
    "translate_error",
    "translate_request",
    "translated_path",
]


def translate_request(
    doc: JSON,
    *,
    to: Format,
    default_max_tokens: int = 4096,
    drop_unsupported: bool = False,
) -> tuple[JSON, list[str]]:
    """A request body for a provider of format ``to``, and the fields it dropped.

    Raises TranslationError for a field that cannot be carried over (unless
    ``drop_unsupported`` and the field may be dropped) or for malformed input. ``doc`` is
    not modified; ``model`` is kept as given.
    """
    carry = Carry(to, drop_unsupported)
    if to == "anthropic":
        return to_anthropic_request(doc, carry, default_max_tokens), carry.dropped
    return to_openai_request(doc, carry), carry.dropped


def translate_answer(
    body: JSON, *, to: Format, client_model: str, created: int | None = None
) -> JSON:
    """A complete (non-streamed, successful) answer in the client's format ``to``."""
    if to == "openai":
        return to_openai_answer(
            body, client_model, int(time.time()) if created is None else created
        )
    return to_anthropic_answer(body, client_model)
