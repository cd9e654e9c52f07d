"""What the builtin echo provider answers, per API, as bytes and pauses (no I/O).

One "token" is one word (a run of non-space characters with the spaces after it), so
``usage`` is plausible and easy to check: the input counts the words of every message (and
the system prompt), the output the words of the answer. The answer is the text of the last
user message; ``max_tokens`` (``max_completion_tokens``) cuts it short as a provider would,
with finish reason ``length`` / stop reason ``max_tokens``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SLOW_MODEL = "echo-slow"
SLOW_WORD_PAUSE_S = 0.1
EMBEDDING_DIMENSIONS = 16  # when the request does not ask for `dimensions`
MAX_EMBEDDING_DIMENSIONS = 4096
NOTHING_TO_ECHO = "(nothing to echo)"
JSON_TYPE = "application/json"
SSE_TYPE = "text/event-stream"

_WORD = re.compile(r"\s*\S+\s*")

Chunks = list[tuple[float, bytes]]  # (pause before it in seconds, bytes)


@dataclass
class Answer:
    status: int
    content_type: str
    chunks: Chunks
    delay_s: float = 0.0  # before the whole answer: a slow model's non-streamed reply


class EchoRequestError(ValueError):
    """A request the echo provider refuses, as the real provider would: 400."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass
class _Asked:
    doc: dict[str, Any]
    model: str
    stream: bool
    include_usage: bool
    pace: float  # pause before each word of a stream

    def reply(self, text: str, *limits: str) -> tuple[list[str], bool]:
        """The answer's words, and whether a token limit cut it short."""
        out = words(text) or [NOTHING_TO_ECHO]
        for name in limits:  # the first one given wins, as max_completion_tokens does
            limit = self.doc.get(name)
            if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 1:
                return (out[:limit], True) if limit < len(out) else (out, False)
        return out, False

    def answer(self, whole: dict[str, Any], events: Chunks, n_words: int) -> Answer:
        if self.stream:
            return Answer(200, SSE_TYPE, events)
        return Answer(200, JSON_TYPE, [(0.0, _dumps(whole))], self.pace * n_words)


def serves(path: str) -> bool:
    return path in _ANSWERS


def answer(path: str, doc: dict[str, Any]) -> Answer:
    """The answer to a POST of `doc` to `path` (after /v1), one of the paths it serves."""
    make = _ANSWERS[path]
    model = doc.get("model")
    if not isinstance(model, str) or not model:
        raise EchoRequestError("you must provide a model parameter", "model")
    options = doc.get("stream_options")
    asked = _Asked(
        doc,
        model,
        stream=doc.get("stream") is True,
        include_usage=isinstance(options, dict) and options.get("include_usage") is True,
        pace=SLOW_WORD_PAUSE_S if model == SLOW_MODEL else 0.0,
    )
    return make(asked)


def error(status: int, message: str, anthropic: bool, param: str | None = None) -> Answer:
    """An error in the shape the provider of that API sends."""
    if anthropic:
        kind = "not_found_error" if status == 404 else "invalid_request_error"
        doc: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
    else:
        doc = {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": param,
                "code": None,
            }
        }
    return Answer(status, JSON_TYPE, [(0.0, _dumps(doc))])


def words(text: str) -> list[str]:
    """The text cut into words, each with the spaces that follow it: they join back to it."""
    return _WORD.findall(text)


def text_of(content: Any) -> str:
    """Text of a message: a string, or the text parts (OpenAI) / text blocks (Anthropic)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return "\n".join(
        part["text"]
        for part in content
        if isinstance(part, dict)
        and part.get("type") in ("text", "input_text")
        and isinstance(part.get("text"), str)
    )


def _messages(doc: dict[str, Any]) -> tuple[list[str], str]:
    """The text of every message, and of the last user message."""
    messages = doc.get("messages")
    if not isinstance(messages, list) or not messages:
        raise EchoRequestError("`messages` must be a non-empty list", "messages")
    if not all(isinstance(m, dict) for m in messages):
        raise EchoRequestError("each message must be an object", "messages")
    users = [text_of(m.get("content")) for m in messages if m.get("role") == "user"]
    return [text_of(m.get("content")) for m in messages], users[-1] if users else ""


def _count(texts: list[str]) -> int:
    return sum(len(words(t)) for t in texts)


def _dumps(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode()


def _data(doc: dict[str, Any]) -> bytes:
    return b"data: " + _dumps(doc) + b"\n\n"


def _event(doc: dict[str, Any]) -> bytes:
    return b"event: " + str(doc["type"]).encode() + b"\ndata: " + _dumps(doc) + b"\n\n"


_DONE = b"data: [DONE]\n\n"


def _openai_usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _chat(asked: _Asked) -> Answer:
    texts, last = _messages(asked.doc)
    out, cut = asked.reply(last, "max_completion_tokens", "max_tokens")
    finish = "length" if cut else "stop"
    usage = _openai_usage(_count(texts), len(out))
    base = {
        "id": "chatcmpl-echo" + os.urandom(12).hex(),
        "created": int(time.time()),
        "model": asked.model,
        "system_fingerprint": "echo",
    }
    message = {"role": "assistant", "content": "".join(out), "refusal": None}
    whole = {
        **base,
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": usage,
    }
    # OpenAI sends `"usage": null` on every chunk once include_usage is asked for.
    extra = {"usage": None} if asked.include_usage else {}

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return _data({**base, "object": "chat.completion.chunk", "choices": [choice], **extra})

    events = [(0.0, chunk({"role": "assistant", "content": "", "refusal": None}))]
    events += [(asked.pace, chunk({"content": word})) for word in out]
    events.append((0.0, chunk({}, finish)))
    if asked.include_usage:
        usage_chunk = {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}
        events.append((0.0, _data(usage_chunk)))
    events.append((0.0, _DONE))
    return asked.answer(whole, events, len(out))


def _completion(asked: _Asked) -> Answer:
    prompt = asked.doc.get("prompt")
    if isinstance(prompt, str):
        texts = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        texts = prompt
    else:
        raise EchoRequestError("`prompt` must be a string or a list of strings", "prompt")
    out, cut = asked.reply(texts[-1], "max_tokens")
    finish = "length" if cut else "stop"
    base = {
        "id": "cmpl-echo" + os.urandom(12).hex(),
        "object": "text_completion",
        "created": int(time.time()),
        "model": asked.model,
    }

    def choices(text: str, finish_reason: str | None) -> dict[str, Any]:
        choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}
        return {**base, "choices": [choice]}

    usage = _openai_usage(_count(texts), len(out))
    whole = {**choices("".join(out), finish), "usage": usage}
    events = [(asked.pace, _data(choices(word, None))) for word in out]
    events.append((0.0, _data(choices("", finish))))
    if asked.include_usage:
        events.append((0.0, _data({**base, "choices": [], "usage": usage})))
    events.append((0.0, _DONE))
    return asked.answer(whole, events, len(out))


def _message(asked: _Asked) -> Answer:
    texts, last = _messages(asked.doc)
    limit = asked.doc.get("max_tokens")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        # As Anthropic: max_tokens is required, so a client that forgets it fails here too.
        raise EchoRequestError("max_tokens: a whole number of at least 1 is required")
    out, cut = asked.reply(last, "max_tokens")
    stop = "max_tokens" if cut else "end_turn"
    used = _count([text_of(asked.doc.get("system")), *texts])
    usage = {
        "input_tokens": used,
        "output_tokens": len(out),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    whole = {
        "id": "msg_echo" + os.urandom(12).hex(),
        "type": "message",
        "role": "assistant",
        "model": asked.model,
        "content": [{"type": "text", "text": "".join(out)}],
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage,
    }
    start = whole | {"content": [], "stop_reason": None, "usage": usage | {"output_tokens": 0}}
    block = {"type": "text", "text": ""}

    def delta(word: str) -> bytes:
        text = {"type": "text_delta", "text": word}
        return _event({"type": "content_block_delta", "index": 0, "delta": text})

    events = [
        (0.0, _event({"type": "message_start", "message": start})),
        (0.0, _event({"type": "content_block_start", "index": 0, "content_block": block})),
    ]
    events += [(asked.pace, delta(word)) for word in out]
    end = {"stop_reason": stop, "stop_sequence": None}
    events += [
        (0.0, _event({"type": "content_block_stop", "index": 0})),
        (
            0.0,
            _event({"type": "message_delta", "delta": end, "usage": {"output_tokens": len(out)}}),
        ),
        (0.0, _event({"type": "message_stop"})),
    ]
    return asked.answer(whole, events, len(out))


def _is_tokens(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(t, int) and not isinstance(t, bool) for t in value)
    )


def _embeddings(asked: _Asked) -> Answer:
    given = asked.doc.get("input")
    if isinstance(given, str) or _is_tokens(given):
        inputs: list[Any] = [given]
    elif (
        isinstance(given, list)
        and given
        and all(isinstance(i, str) or _is_tokens(i) for i in given)
    ):
        inputs = given
    else:
        raise EchoRequestError(
            "`input` must be a string, a list of strings, or token arrays", "input"
        )
    size = asked.doc.get("dimensions", EMBEDDING_DIMENSIONS)
    if (
        not isinstance(size, int)
        or isinstance(size, bool)
        or not 1 <= size <= MAX_EMBEDDING_DIMENSIONS
    ):
        raise EchoRequestError(
            f"`dimensions` must be a whole number from 1 to {MAX_EMBEDDING_DIMENSIONS}",
            "dimensions",
        )
    as_base64 = asked.doc.get("encoding_format") == "base64"
    data = []
    used = 0
    for index, item in enumerate(inputs):
        text = item if isinstance(item, str) else " ".join(map(str, item))
        used += len(words(item)) if isinstance(item, str) else len(item)
        vector = embedding(text, size)
        # The OpenAI SDK asks for base64 (little-endian float32) unless told otherwise.
        shown = (
            base64.b64encode(struct.pack(f"<{size}f", *vector)).decode() if as_base64 else vector
        )
        data.append({"object": "embedding", "index": index, "embedding": shown})
    usage = {"prompt_tokens": used, "total_tokens": used}
    whole = {"object": "list", "data": data, "model": asked.model, "usage": usage}
    return Answer(200, JSON_TYPE, [(0.0, _dumps(whole))])


def embedding(text: str, dimensions: int) -> list[float]:
    """A unit vector that depends only on the text: equal texts, equal vectors."""
    raw: list[float] = []
    counter = 0
    while len(raw) < dimensions:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        raw += [(b - 127.5) / 127.5 for b in digest]
        counter += 1
    raw = raw[:dimensions]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


_ANSWERS: dict[str, Callable[[_Asked], Answer]] = {
    "/chat/completions": _chat,
    "/completions": _completion,
    "/messages": _message,
    "/embeddings": _embeddings,
}
