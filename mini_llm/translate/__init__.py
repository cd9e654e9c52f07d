"""Translation between OpenAI chat completions and Anthropic messages: pure, no I/O."""

from __future__ import annotations

import time
from typing import Any

from .answers import to_anthropic_answer, to_openai_answer
from .anthropic_request import to_anthropic_request
from .anthropic_stream import OpenAIToAnthropicStream
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
from .openai_stream import AnthropicToOpenAIStream
from .stream import StreamTranslator

__all__ = [
    "ANTHROPIC_VERSION",
    "DROPPED_HEADER",
    "FORMATS",
    "RESPONSE_HEADERS_TO_DROP",
    "AnthropicToOpenAIStream",
    "Format",
    "HeaderChanges",
    "OpenAIToAnthropicStream",
    "StreamTranslator",
    "TranslationError",
    "content_type",
    "is_translatable",
    "needs_translation",
    "path_format",
    "request_headers",
    "stream_translator",
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
        translated = to_anthropic_request(doc, carry, default_max_tokens)
    else:
        translated = to_openai_request(doc, carry)
    _check_tool_results(doc)  # after what the fields say: those errors name a field first
    return translated, carry.dropped


def _check_tool_results(doc: JSON) -> None:
    """Every tool result answers a tool call made earlier in the conversation."""
    messages = doc.get("messages")
    if not isinstance(messages, list):
        return
    called: set[str] = set()
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            continue
        for call in message.get("tool_calls") or ():  # OpenAI assistant turns
            if isinstance(call, dict) and isinstance(call.get("id"), str):
                called.add(call["id"])
        if message.get("role") == "tool":
            answered = message.get("tool_call_id")
            if answered not in called:
                raise TranslationError(
                    f"messages[{i}].tool_call_id",
                    f"is {answered!r}, which no earlier assistant tool call has",
                    droppable=False,
                )
        content = message.get("content")
        for j, block in enumerate(content if isinstance(content, list) else ()):
            if not isinstance(block, dict):
                continue
            if block.get("type") == "tool_use" and isinstance(block.get("id"), str):
                called.add(block["id"])
            elif block.get("type") == "tool_result" and block.get("tool_use_id") not in called:
                raise TranslationError(
                    f"messages[{i}].content[{j}].tool_use_id",
                    f"is {block.get('tool_use_id')!r}, which no earlier tool_use block has",
                    droppable=False,
                )


def translate_answer(
    body: JSON, *, to: Format, client_model: str, created: int | None = None
) -> JSON:
    """A complete (non-streamed, successful) answer in the client's format ``to``."""
    if to == "openai":
        return to_openai_answer(
            body, client_model, int(time.time()) if created is None else created
        )
    return to_anthropic_answer(body, client_model)


def stream_translator(client_request: JSON, *, to: Format) -> StreamTranslator:
    """A translator of the upstream's stream for the client that sent ``client_request``.

    ``to`` is the client's format. The OpenAI usage chunk is written only when the client
    asked for it with ``stream_options.include_usage``.
    """
    model = client_request.get("model")
    client_model = model if isinstance(model, str) else ""
    if to == "anthropic":
        return OpenAIToAnthropicStream(client_model)
    options: Any = client_request.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    return AnthropicToOpenAIStream(client_model, include_usage=include_usage)
