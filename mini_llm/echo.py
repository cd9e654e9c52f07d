"""The builtin `echo` provider: provider-shaped answers made in-process, no network.

``await echo_exchange(method, path_tail, headers, body)`` answers what a provider at ``/v1``
would: ``/chat/completions``, ``/completions``, ``/messages`` and ``/embeddings``, streamed
(``"stream": true``) or not, echoing the text of the last user message with ``usage``
(echo_answers.py has the formats). Any other path gets a 404 and a body that is not JSON a
400, each in the error shape of the path's API (Anthropic's on ``/messages*``).

The answer is an ``EchoResponse``: the part of an upstream answer (``http1.Answer``) that a
streaming proxy reads (status, reason, headers, content_type, content_length,
content.readany/read, read, close, release), so the forwarding path relays it as it relays a
real upstream.

The model ``echo-slow`` paces its words one every 100 ms. Streamed, each word is an event of
its own; not streamed, the whole answer comes after the same total delay (words x 100 ms),
as a real provider answers only once it has generated everything. Closing the response ends
a slow stream at once. No task is ever started: each pause is awaited by the reader itself.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator, Mapping
from http import HTTPStatus

from aiohttp import ClientConnectionError
from multidict import CIMultiDict, CIMultiDictProxy

from .echo_answers import (
    SLOW_MODEL,
    SLOW_WORD_PAUSE_S,
    SSE_TYPE,
    Answer,
    Chunks,
    EchoRequestError,
    answer,
    error,
    serves,
)

__all__ = ["SLOW_MODEL", "SLOW_WORD_PAUSE_S", "EchoContent", "EchoResponse", "echo_exchange"]


class EchoContent:
    """The body, read chunk by chunk; a chunk may be due only after a pause (echo-slow)."""

    def __init__(self, chunks: Chunks) -> None:
        self._chunks = deque(chunks)
        self.closed = False
        self._waiter: asyncio.Future[None] | None = None

    async def readany(self) -> bytes:
        """The next bytes as soon as they are due; b"" at the end."""
        if self.closed:
            raise ClientConnectionError("Connection closed")
        if not self._chunks:
            return b""
        pause, first = self._chunks.popleft()
        if pause > 0:
            await self._pause(pause)
        out = [first]
        # What is already due goes out together, as a socket buffer would hand it over.
        while self._chunks and self._chunks[0][0] <= 0:
            out.append(self._chunks.popleft()[1])
        return b"".join(out)

    async def read(self) -> bytes:
        """Everything left, once all of it is due."""
        parts = []
        while chunk := await self.readany():
            parts.append(chunk)
        return b"".join(parts)

    async def iter_any(self) -> AsyncIterator[bytes]:
        while chunk := await self.readany():
            yield chunk

    async def _pause(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(seconds, _wake, waiter)
        self._waiter = waiter
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None
        if self.closed:
            raise ClientConnectionError("Connection closed")

    def close(self) -> None:
        self.closed = True
        self._chunks.clear()
        # A reader waiting for the next word wakes at once and learns the answer is gone.
        if self._waiter is not None:
            _wake(self._waiter)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class EchoResponse:
    """What a streaming proxy reads of an upstream answer, for an echo answer."""

    def __init__(self, status: int, content_type: str, chunks: Chunks) -> None:
        self.status = status
        self.reason = HTTPStatus(status).phrase
        self.content_type = content_type
        headers = CIMultiDict[str]()
        self.content_length: int | None = None
        if content_type == SSE_TYPE:
            headers["Content-Type"] = f"{SSE_TYPE}; charset=utf-8"
            headers["Cache-Control"] = "no-cache"
        else:
            self.content_length = sum(len(chunk) for _, chunk in chunks)
            headers["Content-Type"] = content_type
            headers["Content-Length"] = str(self.content_length)
        self.headers = CIMultiDictProxy(headers)
        self.content = EchoContent(chunks)
        self._body: bytes | None = None

    @classmethod
    def of(cls, made: Answer) -> EchoResponse:
        return cls(made.status, made.content_type, made.chunks)

    @property
    def closed(self) -> bool:
        return self.content.closed

    async def read(self) -> bytes:
        if self._body is None:
            self._body = await self.content.read()
        return self._body

    def close(self) -> None:
        self.content.close()

    def release(self) -> None:
        self.content.close()


async def echo_exchange(
    method: str, path_tail: str, headers: Mapping[str, str], body: bytes
) -> EchoResponse:
    """The echo provider's answer to one request; `path_tail` is the path after ``/v1``.

    `headers` are part of the provider interface; the echo needs no credentials and reads none.
    """
    del headers
    path = path_tail.split("?", 1)[0].rstrip("/")
    anthropic = path == "/messages" or path.startswith("/messages/")
    method = method.upper()
    if method != "POST" or not serves(path):
        return EchoResponse.of(error(404, f"Invalid URL ({method} /v1{path})", anthropic))
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        message = "We could not parse the JSON body of your request."
        return EchoResponse.of(error(400, message, anthropic))
    if not isinstance(doc, dict):
        return EchoResponse.of(error(400, "The request body must be a JSON object.", anthropic))
    try:
        made = answer(path, doc)
    except EchoRequestError as err:
        return EchoResponse.of(error(400, err.message, anthropic, err.param))
    if made.delay_s > 0:
        # echo-slow, not streamed: the whole answer once it is "generated" (cancellable).
        await asyncio.sleep(made.delay_s)
    return EchoResponse.of(made)
