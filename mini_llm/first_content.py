"""Until a stream's first content: whether an event stream has begun to answer, or failed.

A stream that fails before its first content event (an `error` event, a dropped connection)
is a failed try that the next key or target may still answer, as long as nothing reached the
client. `StreamStart` reads the events as they arrive and says which it is:
content (a text or tool-call delta), failed (an error event), complete (the stream ended
without content, which is an answer too), or not yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Literal

from multidict import CIMultiDictProxy

from .relay import BROKEN_OFF, Answer

Verdict = Literal["pending", "content", "failed", "complete"]
_EVENT_END = b"\n\n"
# Delta fields that show the client something: text, tool calls, a refusal, visible reasoning.
_CONTENT_KEYS = ("content", "tool_calls", "refusal", "reasoning_content", "reasoning")


class StreamStart:
    """Fed the first chunks of an event stream in the upstream's format."""

    __slots__ = ("_anthropic", "_buffer", "held", "verdict")

    def __init__(self, anthropic: bool) -> None:
        self._anthropic = anthropic
        self._buffer = b""
        self.held: list[bytes] = []  # every chunk read so far, to send once content came
        self.verdict: Verdict = "pending"

    def feed(self, chunk: bytes) -> Verdict:
        self.held.append(chunk)
        self._buffer += chunk.replace(b"\r\n", b"\n")
        while self.verdict == "pending":
            end = self._buffer.find(_EVENT_END)
            if end < 0:
                break
            event, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
            self.verdict = self._judge(event)
        return self.verdict

    def _judge(self, event: bytes) -> Verdict:
        name = b""
        data = b""
        for line in event.split(b"\n"):
            if line.startswith(b"event:"):
                name = line[6:].strip()
            elif line.startswith(b"data:"):
                data = line[5:].strip()
        if name == b"error":
            return "failed"
        if self._anthropic:
            if name == b"content_block_delta":
                return "content"
            return "complete" if name == b"message_stop" else "pending"
        if data == b"[DONE]":
            return "complete"
        if name.endswith(b".delta"):  # the Responses API's output deltas
            return "content"
        if name in (b"response.completed", b"response.failed", b"response.incomplete"):
            return "failed" if name == b"response.failed" else "complete"
        if not data.startswith(b"{"):
            return "pending"
        try:
            doc = json.loads(data)
        except ValueError:
            return "pending"
        if not isinstance(doc, dict):
            return "pending"
        if "error" in doc:
            return "failed"
        for choice in doc.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict) and any(delta.get(k) for k in _CONTENT_KEYS):
                return "content"
            if choice.get("text"):  # legacy completions
                return "content"
            if choice.get("finish_reason"):
                return "complete"  # an answer without content is still an answer
        return "pending"


class _HeldBody:
    """The chunks read while holding, then the rest of the upstream's body."""

    __slots__ = ("_error", "_held", "_read")

    def __init__(
        self, held: list[bytes], read: Callable[[], Awaitable[bytes]], error: BaseException | None
    ) -> None:
        self._held = deque(held)
        self._read = read
        self._error = error

    async def readany(self) -> bytes:
        if self._held:
            return self._held.popleft()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return await self._read()


class HeldAnswer:
    """An upstream answer whose first chunks were read to see how the stream began."""

    __slots__ = ("_answer", "content")

    def __init__(self, answer: Answer, held: list[bytes], error: BaseException | None) -> None:
        self._answer = answer
        self.content = _HeldBody(held, answer.content.readany, error)

    @property
    def status(self) -> int:
        return self._answer.status

    @property
    def reason(self) -> str | None:
        return self._answer.reason

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        return self._answer.headers

    @property
    def content_type(self) -> str:
        return self._answer.content_type

    @property
    def content_length(self) -> int | None:
        return self._answer.content_length

    async def read(self) -> bytes:
        chunks = []
        while chunk := await self.content.readany():
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        self._answer.close()


async def hold_until_content(
    answer: Answer, anthropic: bool, limit_s: float | None
) -> tuple[Verdict, HeldAnswer]:
    """Read an event stream until its first content, an error, or its end.

    The verdict is `failed` for an error event, a connection that broke off, or an end before
    any content or terminal event; the answer given back replays what was read, then the rest.
    Holding stops after `limit_s` (the read timeout) whatever came: `pending` then.
    """
    start = StreamStart(anthropic)
    errors: list[BaseException] = []
    # After limit_s (keep-alive comments for ever?) holding stops; the stream goes on as it is.
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(_read_until_verdict(answer, start, errors), limit_s)
    return start.verdict, HeldAnswer(answer, start.held, errors[0] if errors else None)


async def _read_until_verdict(
    answer: Answer, start: StreamStart, errors: list[BaseException]
) -> None:
    read = answer.content.readany
    while start.verdict == "pending":
        try:
            chunk = await read()
        except BROKEN_OFF as exc:
            errors.append(exc)
            start.verdict = "failed"
            return
        if not chunk:
            start.verdict = "failed"  # ended before any content or terminal event
            return
        start.feed(chunk)
