"""Upstream answers and streams, as each provider writes them, for the translation tests."""

from __future__ import annotations

import json
from typing import Any


def anthropic_sse(*events: dict[str, Any]) -> bytes:
    """Anthropic's wire format: an `event:` line naming each event's type."""
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


def openai_sse(*chunks: dict[str, Any] | str) -> bytes:
    """OpenAI's wire format: `data:` lines only, `[DONE]` given as the string."""
    return b"".join(
        f"data: {c if isinstance(c, str) else json.dumps(c)}\n\n".encode() for c in chunks
    )


def parse_sse(raw: bytes) -> list[tuple[str, Any]]:
    """(event name, parsed data or the raw string) per event; comments are left out."""
    out: list[tuple[str, Any]] = []
    for block in raw.decode().split("\n\n"):
        lines = [ln for ln in block.split("\n") if ln and not ln.startswith(":")]
        if not lines:
            continue
        name = next((ln[7:] for ln in lines if ln.startswith("event: ")), "")
        data = "\n".join(ln[6:] for ln in lines if ln.startswith("data: "))
        try:
            out.append((name, json.loads(data)))
        except ValueError:
            out.append((name, data))
    return out


# Anthropic ---------------------------------------------------------------------------------------

MESSAGE_START = {
    "type": "message_start",
    "message": {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 25, "output_tokens": 1, "cache_read_input_tokens": 5},
    },
}


def block_start(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def block_delta(index: int, delta: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": delta}


def block_stop(index: int) -> dict[str, Any]:
    return {"type": "content_block_stop", "index": index}


def message_delta(stop_reason: str, output_tokens: int) -> dict[str, Any]:
    return {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        "usage": {"output_tokens": output_tokens},
    }


MESSAGE_STOP = {"type": "message_stop"}
PING = {"type": "ping"}

# Thinking, then text, then a tool call whose input arrives in three fragments.
ANTHROPIC_EVENTS: list[dict[str, Any]] = [
    MESSAGE_START,
    PING,
    block_start(0, {"type": "thinking", "thinking": "", "signature": ""}),
    block_delta(0, {"type": "thinking_delta", "thinking": "Let me think."}),
    block_delta(0, {"type": "signature_delta", "signature": "sig"}),
    block_stop(0),
    block_start(1, {"type": "text", "text": ""}),
    block_delta(1, {"type": "text_delta", "text": "Hello"}),
    block_delta(1, {"type": "text_delta", "text": ", wörld"}),
    block_stop(1),
    block_start(2, {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {}}),
    block_delta(2, {"type": "input_json_delta", "partial_json": ""}),
    block_delta(2, {"type": "input_json_delta", "partial_json": '{"city": '}),
    block_delta(2, {"type": "input_json_delta", "partial_json": '"Paris"}'}),
    block_stop(2),
    message_delta("tool_use", 42),
    MESSAGE_STOP,
]
ANTHROPIC_STREAM = anthropic_sse(*ANTHROPIC_EVENTS)

ANTHROPIC_MESSAGE: dict[str, Any] = {
    "id": "msg_01",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5",
    "content": [
        {"type": "thinking", "thinking": "Let me think.", "signature": "sig"},
        {"type": "text", "text": "Hello, wörld"},
        {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 20,
        "output_tokens": 42,
        "cache_read_input_tokens": 5,
        "cache_creation_input_tokens": 3,
    },
}


# OpenAI ------------------------------------------------------------------------------------------


def chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {
        "id": "chatcmpl-01",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-4o-2024-08-06",
        "choices": choices,
        **extra,
    }


def tool_delta(index: int, **fields: Any) -> dict[str, Any]:
    return {"tool_calls": [{"index": index, **fields}]}


USAGE = {
    "prompt_tokens": 30,
    "completion_tokens": 12,
    "total_tokens": 42,
    "prompt_tokens_details": {"cached_tokens": 10},
}

# Text, then two tool calls in parallel, their arguments in fragments; then usage and [DONE].
OPENAI_CHUNKS: list[dict[str, Any] | str] = [
    chunk({"role": "assistant", "content": "", "refusal": None}),
    chunk({"content": "Hello"}),
    chunk({"content": ", wörld"}),
    chunk(tool_delta(0, id="call_a", type="function", function={"name": "f", "arguments": ""})),
    chunk(tool_delta(0, function={"arguments": '{"x":'})),
    chunk(tool_delta(0, function={"arguments": " 1}"})),
    chunk(tool_delta(1, id="call_b", type="function", function={"name": "g", "arguments": ""})),
    chunk(tool_delta(1, function={"arguments": "{}"})),
    chunk({}, "tool_calls"),
    chunk(None, usage=USAGE),
    "[DONE]",
]
OPENAI_STREAM = openai_sse(*OPENAI_CHUNKS)

OPENAI_COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-01",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Hello, wörld",
                "refusal": None,
                "tool_calls": [
                    {
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "f", "arguments": '{"x": 1}'},
                    }
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ],
    "usage": USAGE,
}
