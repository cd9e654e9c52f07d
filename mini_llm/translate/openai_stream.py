"""An Anthropic messages stream rewritten as OpenAI chat completion chunks."""

from __future__ import annotations

import json
import time
from typing import Any, ClassVar

from .answers import finish_reason, openai_usage
from .base import JSON, Format, dumps, obj
from .errors import error_fields
from .sse import Event, encode
from .stream import StreamTranslator

_DONE = b"data: [DONE]\n\n"
_TEXT_CHOICE = {"index": 0, "delta": {"content": ""}, "logprobs": None, "finish_reason": None}


class AnthropicToOpenAIStream(StreamTranslator):
    """Anthropic SSE in, ``chat.completion.chunk`` events and ``[DONE]`` out."""

    client_format: ClassVar[Format] = "openai"

    def __init__(
        self, client_model: str, *, include_usage: bool = False, created: int | None = None
    ) -> None:
        super().__init__(client_model)
        self.include_usage = include_usage
        self._created = int(time.time()) if created is None else created
        self._id = ""
        self._usage: JSON = {}
        self._tools: dict[Any, int] = {}  # Anthropic block index -> OpenAI tool call index
        self._finished = False
        self._around_text: tuple[str, str] | None = None  # a text chunk's JSON, but the text

    def _event(self, event: Event) -> bytes:
        try:
            doc = json.loads(event.data)
        except ValueError:
            return b""
        if not isinstance(doc, dict):
            return b""
        kind = doc.get("type") or event.event
        if kind == "content_block_delta":
            return self._delta(doc)
        if kind == "content_block_start":
            return self._block_start(doc)
        if kind == "message_start":
            return self._message_start(doc)
        if kind == "message_delta":
            return self._message_delta(doc)
        if kind == "message_stop":
            return self._message_stop()
        if kind == "ping":
            return b": ping\n\n"  # keeps the client's connection warm
        if kind == "error":
            message, error_type, _ = error_fields(doc)
            return self.fail(message or "the provider's stream failed", kind=error_type, code=None)
        return b""  # content_block_stop and anything new carry nothing for OpenAI

    def _text(self, text: str) -> bytes:
        """A content chunk: the same bytes as `_chunk({"content": text})`, the envelope made once.

        Text deltas are most of a stream, and all that changes between them is the text.
        """
        if self._around_text is None:
            whole = dumps(self._envelope([_TEXT_CHOICE]))
            # Strings inside are escaped, so this is the structure's own, and the first.
            head, _, tail = whole.partition('"content":""')
            self._around_text = (head + '"content":', tail)
        head, tail = self._around_text
        return encode(head + dumps(text) + tail)

    def _chunk(self, delta: JSON, finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return encode(dumps(self._envelope([choice])))

    def _envelope(self, choices: list[JSON]) -> JSON:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self.client_model,
            "choices": choices,
        }

    def _message_start(self, doc: JSON) -> bytes:
        message = obj(doc.get("message"))
        self._id = str(message.get("id") or "")
        self._around_text = None
        self._merge_usage(message.get("usage"))
        return self._chunk({"role": "assistant", "content": ""})

    def _block_start(self, doc: JSON) -> bytes:
        block = doc.get("content_block")
        if not isinstance(block, dict):
            return b""
        if block.get("type") == "text" and block.get("text"):
            return self._text(block["text"])
        if block.get("type") != "tool_use":
            return b""  # thinking and the like never reach the answer
        number = self._tools[doc.get("index")] = len(self._tools)
        given = block.get("input")
        call = {
            "index": number,
            "id": block.get("id"),
            "type": "function",
            "function": {"name": block.get("name"), "arguments": dumps(given) if given else ""},
        }
        return self._chunk({"tool_calls": [call]})

    def _delta(self, doc: JSON) -> bytes:
        delta = doc.get("delta")
        if not isinstance(delta, dict):
            return b""
        if delta.get("type") == "text_delta" and delta.get("text"):
            return self._text(delta["text"])
        fragment = delta.get("partial_json")
        if delta.get("type") == "input_json_delta" and fragment and doc.get("index") in self._tools:
            call = {"index": self._tools[doc.get("index")], "function": {"arguments": fragment}}
            return self._chunk({"tool_calls": [call]})
        return b""  # thinking_delta, signature_delta, citations_delta

    def _message_delta(self, doc: JSON) -> bytes:
        self._merge_usage(doc.get("usage"))
        delta = obj(doc.get("delta"))
        if self._finished:
            return b""
        self._finished = True
        return self._chunk({}, finish_reason(delta.get("stop_reason")))

    def _message_stop(self) -> bytes:
        out = b"" if self._finished else self._chunk({}, "stop")
        self._finished = True
        if self.include_usage:
            usage = self._envelope([])
            usage["usage"] = openai_usage(self._usage)
            out += encode(dumps(usage))
        self.complete = True
        return out + _DONE

    def _merge_usage(self, usage: Any) -> None:
        # message_delta counts are running totals; a missing one keeps message_start's.
        if isinstance(usage, dict):
            self._usage.update({k: v for k, v in usage.items() if v is not None})
