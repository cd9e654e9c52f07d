"""OpenAI chat completion chunks rewritten as an Anthropic messages stream."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from .answers import anthropic_usage, stop_reason
from .base import JSON, Format, dumps, obj
from .errors import error_fields
from .sse import Event, encode
from .stream import StreamTranslator


class OpenAIToAnthropicStream(StreamTranslator):
    """``chat.completion.chunk`` events in, Anthropic message events out."""

    client_format: ClassVar[Format] = "anthropic"

    def __init__(self, client_model: str) -> None:
        super().__init__(client_model)
        self._started = False
        self._blocks = 0  # Anthropic content blocks opened so far
        self._open: int | None = None  # the block being written
        self._open_is_text = False
        self._tools: dict[Any, int] = {}  # OpenAI tool call index -> Anthropic block index
        self._finish: Any = None
        self._usage: Any = None

    def _event(self, event: Event) -> bytes:
        if event.data.strip() == "[DONE]":
            return self._done()
        try:
            doc = json.loads(event.data)
        except ValueError:
            return b""
        if not isinstance(doc, dict):
            return b""
        if doc.get("error") is not None and not doc.get("choices"):
            message, kind, code = error_fields(doc)
            return self.fail(message or "the provider's stream failed", kind=kind, code=code)
        out = self._start(doc)
        if isinstance(doc.get("usage"), dict):
            self._usage = doc["usage"]
        for choice in doc.get("choices") or []:
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                out += self._choice(choice)
        return out

    def _emit(self, doc: JSON) -> bytes:
        return encode(dumps(doc), doc["type"])

    def _start(self, doc: JSON) -> bytes:
        if self._started:
            return b""
        self._started = True
        usage = doc.get("usage")
        message: JSON = {
            "id": str(doc.get("id") or ""),
            "type": "message",
            "role": "assistant",
            "model": self.client_model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": anthropic_usage(usage) if isinstance(usage, dict) else _NO_USAGE,
        }
        return self._emit({"type": "message_start", "message": message})

    def _choice(self, choice: JSON) -> bytes:
        out = b""
        delta = obj(choice.get("delta"))
        for key in ("content", "refusal"):
            if isinstance(delta.get(key), str) and delta[key]:
                out += self._text(delta[key])
        for number, call in enumerate(delta.get("tool_calls") or []):
            if isinstance(call, dict):
                out += self._tool_call(call, number)
        if choice.get("finish_reason"):
            self._finish = choice["finish_reason"]
            out += self._stop_block()
        return out

    def _text(self, text: str) -> bytes:
        out = b""
        if self._open is None or not self._open_is_text:
            out += self._open_block({"type": "text", "text": ""}, is_text=True)
        delta = {"type": "text_delta", "text": text}
        return out + self._emit(
            {"type": "content_block_delta", "index": self._open, "delta": delta}
        )

    def _tool_call(self, call: JSON, position: int) -> bytes:
        # Some providers leave out `index`: a call with a new id is then a new call.
        key = call.get("index")
        if key is None:
            ident = call.get("id")
            key = ("id", ident) if ident else next(reversed(self._tools), position)
        fn = obj(call.get("function"))
        out = b""
        if key not in self._tools:
            block = {"type": "tool_use", "id": call.get("id") or "", "name": fn.get("name") or ""}
            out += self._open_block({**block, "input": {}}, is_text=False)
            self._tools[key] = self._blocks - 1
        arguments = fn.get("arguments")
        if isinstance(arguments, dict):
            arguments = dumps(arguments)
        if isinstance(arguments, str) and arguments:
            delta = {"type": "input_json_delta", "partial_json": arguments}
            index = self._tools[key]
            out += self._emit({"type": "content_block_delta", "index": index, "delta": delta})
        return out

    def _open_block(self, block: JSON, *, is_text: bool) -> bytes:
        out = self._stop_block()
        self._open, self._open_is_text = self._blocks, is_text
        self._blocks += 1
        start = {"type": "content_block_start", "index": self._open, "content_block": block}
        return out + self._emit(start)

    def _stop_block(self) -> bytes:
        if self._open is None:
            return b""
        index, self._open = self._open, None
        return self._emit({"type": "content_block_stop", "index": index})

    def _done(self) -> bytes:
        out = self._start({}) + self._stop_block()
        usage = anthropic_usage(self._usage) if self._usage is not None else {"output_tokens": 0}
        delta = {"stop_reason": stop_reason(self._finish), "stop_sequence": None}
        out += self._emit({"type": "message_delta", "delta": delta, "usage": usage})
        self.complete = True
        return out + self._emit({"type": "message_stop"})


_NO_USAGE = {"input_tokens": 0, "output_tokens": 0}
