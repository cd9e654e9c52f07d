"""Complete JSON answers from one format to the other: content, tool calls, stop reason, usage."""

from __future__ import annotations

import json
from typing import Any

from .base import JSON, as_int, dumps, obj

# Anthropic stop_reason -> OpenAI finish_reason.
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# OpenAI finish_reason -> Anthropic stop_reason. OpenAI does not say which stop sequence
# matched, so `stop` is always end_turn.
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def finish_reason(stop_reason: Any) -> str:
    return FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def stop_reason(finish: Any) -> str:
    return STOP_REASONS.get(finish, "end_turn") if isinstance(finish, str) else "end_turn"


def openai_usage(usage: Any) -> JSON:
    """Anthropic usage as OpenAI's: its input_tokens leave out the cache reads and writes."""
    usage = obj(usage)
    cached = as_int(usage.get("cache_read_input_tokens"))
    prompt = as_int(usage.get("input_tokens")) + cached
    prompt += as_int(usage.get("cache_creation_input_tokens"))
    completion = as_int(usage.get("output_tokens"))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def anthropic_usage(usage: Any) -> JSON:
    """OpenAI usage as Anthropic's: prompt_tokens count the cached ones too."""
    usage = obj(usage)
    details = usage.get("prompt_tokens_details")
    cached = as_int(details.get("cached_tokens")) if isinstance(details, dict) else 0
    return {
        "input_tokens": max(as_int(usage.get("prompt_tokens")) - cached, 0),
        "output_tokens": as_int(usage.get("completion_tokens")),
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
    }


def tool_input(arguments: Any) -> JSON:
    """OpenAI's arguments string as Anthropic's input object.

    A model may write arguments that do not parse (cut off at max_tokens, say); Anthropic's
    input must be an object, so those become {}.
    """
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = json.loads(arguments) if isinstance(arguments, str) else None
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def to_openai_answer(body: JSON, client_model: str, created: int) -> JSON:
    """An Anthropic message as a chat completion. Thinking blocks are left out."""
    texts: list[str] = []
    calls: list[JSON] = []
    for block in body.get("content") or []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            texts.append(str(block.get("text", "")))
        elif block.get("type") == "tool_use":
            fn = {"name": block.get("name"), "arguments": dumps(block.get("input") or {})}
            calls.append({"id": block.get("id"), "type": "function", "function": fn})
    message: JSON = {
        "role": "assistant",
        "content": "".join(texts) if texts else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": finish_reason(body.get("stop_reason")),
    }
    return {
        "id": body.get("id") or "",
        "object": "chat.completion",
        "created": created,
        "model": client_model,
        "choices": [choice],
        "usage": openai_usage(body.get("usage")),
    }


def to_anthropic_answer(body: JSON, client_model: str) -> JSON:
    """A chat completion (its first choice) as an Anthropic message."""
    choices = body.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    choice = obj(choice)
    message = obj(choice.get("message"))
    content: list[JSON] = []
    for key in ("content", "refusal"):
        text = message.get(key)
        if isinstance(text, list):  # some providers answer with parts
            text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
        if isinstance(text, str) and text:
            content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or []:
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict):
            block = {"type": "tool_use", "id": call.get("id") or "", "name": fn.get("name") or ""}
            content.append({**block, "input": tool_input(fn.get("arguments"))})
    return {
        "id": body.get("id") or "",
        "type": "message",
        "role": "assistant",
        "model": client_model,
        "content": content,
        "stop_reason": stop_reason(choice.get("finish_reason")),
        "stop_sequence": None,
        "usage": anthropic_usage(body.get("usage")),
    }
