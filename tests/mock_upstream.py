"""A real upstream LLM API for tests: JSON, SSE with pauses, errors, hangs, drops, key checks.

It runs its own event loop in a thread so any client (sync SDKs, subprocesses) can use it.
Behaviour is chosen by the upstream model name the gateway sends:

- ``status-NNN``: answer NNN with an OpenAI-style error body.
- ``hang``: never answer (the test awaits ``disconnected``).
- ``drop``: close the connection without answering.
- ``slow-stream``: stream, then wait for ``release`` before the last chunks.
- ``drop-stream``: send two chunks, then cut the connection.
- ``hang-stream``: send one chunk, then go silent.
- ``gzip``: a gzip-compressed JSON answer.
- ``cached-usage``: a chat completion whose usage has cached prompt tokens (10 of 40).
- ``truncated-json`` / ``truncated-big-json``: half of a 100 B / 200 kB JSON body, then a cut.
- ``flaky-N``: the first N requests for this model get 503, then 200.
- ``slow-N``: a normal JSON answer after N milliseconds.
- ``error-first`` / ``drop-first``: a stream that starts (role chunk or ``message_start``),
  then sends an error event / cuts the connection, before any content.
- anything else: a normal answer (SSE when ``stream`` is true, with a usage chunk when
  ``stream_options.include_usage``), echoing what it received.

Keys: when ``valid_keys`` is set, a request without one of them gets 401, like a real
provider. ``key_status[key] = (status, headers)`` makes one key always fail that way.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    key: str | None
    at: float = field(default_factory=time.monotonic)

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class MockUpstream:
    valid_keys: set[str] = field(default_factory=set)
    key_status: dict[str, tuple[int, dict[str, str]]] = field(default_factory=dict)
    chunk_pause_s: float = 0.0

    def __post_init__(self) -> None:
        self.requests: list[Seen] = []
        self.disconnected = threading.Event()
        self.release = threading.Event()
        self.first_chunk_sent = threading.Event()
        self.finished = threading.Event()
        self._counts: Counter[str] = Counter()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    # lifecycle -------------------------------------------------------------------------------
    def start(self) -> MockUpstream:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def reset(self) -> None:
        self.requests.clear()
        self._counts.clear()
        for event in (self.disconnected, self.release, self.first_chunk_sent, self.finished):
            event.clear()
        self.valid_keys = set()
        self.key_status = {}

    # behaviour -------------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        key = _key_of(request)
        self.requests.append(
            Seen(
                request.method, request.path, request.query_string, dict(request.headers), body, key
            )
        )
        try:
            return await self._answer(request, body, key)
        except asyncio.CancelledError:
            self.disconnected.set()
            raise

    async def _answer(
        self, request: web.Request, body: bytes, key: str | None
    ) -> web.StreamResponse:
        if key is not None and key in self.key_status:
            status, headers = self.key_status[key]
            return _error(status, f"key rejected with {status}", headers)
        if self.valid_keys and key not in self.valid_keys:
            return _error(401, "Incorrect API key provided")
        try:
            doc = json.loads(body) if body else {}
        except ValueError:
            return _error(400, "mock: body is not JSON")
        model = str(doc.get("model", ""))
        anthropic = request.path.startswith("/v1/messages")
        self._counts[model] += 1
        if model.startswith("status-"):
            return _error(int(model[7:]), f"mock error {model[7:]}")
        if model.startswith("flaky-") and self._counts[model] <= int(model[6:]):
            return _error(503, "mock: temporarily overloaded")
        if model.startswith("slow-") and model[5:].isdigit():
            await asyncio.sleep(int(model[5:]) / 1000)
        if model in ("error-first", "drop-first"):
            return await self._failing_start(request, model, anthropic)
        if model == "hang":
            await asyncio.sleep(3600)
        if model == "drop":
            assert request.transport is not None
            request.transport.abort()
            await asyncio.sleep(3600)
        if model == "cached-usage":
            answer = _openai_completion(model, doc)
            answer["usage"] = {
                "prompt_tokens": 40,
                "completion_tokens": 2,
                "total_tokens": 42,
                "prompt_tokens_details": {"cached_tokens": 10},
            }
            return web.json_response(answer)
        if model in ("truncated-json", "truncated-big-json"):
            size = 100 if model == "truncated-json" else 200_000
            response = web.StreamResponse(
                headers={"Content-Type": "application/json", "Content-Length": str(size)}
            )
            await response.prepare(request)
            await response.write(b'{"partial": "' + b"x" * (size // 2))
            assert request.transport is not None
            request.transport.abort()
            return response
        if model == "gzip":
            payload = gzip.compress(json.dumps({"model": model, "compressed": True}).encode())
            return web.Response(
                body=payload,
                headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
            )
        if model == "set-cookie":  # an upstream that answers with a cookie
            answer = _openai_completion(model, doc)
            return web.json_response(answer, headers={"Set-Cookie": "session=client-a; Path=/"})
        if doc.get("stream") or model.endswith("-stream"):
            options = doc.get("stream_options")
            usage = isinstance(options, dict) and options.get("include_usage") is True
            return await self._stream(request, model, anthropic, usage)
        answer = _anthropic_message(model) if anthropic else _openai_completion(model, doc)
        answer["x_table"] = request.headers.get("x-table")  # lets tests see which table sent it
        return web.json_response(answer, headers={"x-request-id": "upstream-req-1"})

    async def _failing_start(
        self, request: web.Request, model: str, anthropic: bool
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if anthropic:
            await response.write(_anthropic_events(model)[0])
        else:
            role = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
            await response.write(b"data: " + json.dumps(role).encode() + b"\n\n")
        if model == "drop-first":
            assert request.transport is not None
            request.transport.abort()
            return response
        error = {"type": "overloaded_error", "message": "mock: overloaded"}
        if anthropic:
            data = json.dumps({"type": "error", "error": error})
            await response.write(f"event: error\ndata: {data}\n\n".encode())
        else:
            await response.write(b"data: " + json.dumps({"error": error}).encode() + b"\n\n")
        await response.write_eof()
        return response

    async def _stream(
        self, request: web.Request, model: str, anthropic: bool, usage: bool = False
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        events = _anthropic_events(model) if anthropic else _openai_events(model, usage)
        for i, event in enumerate(events):
            if i == 1 and model == "hang-stream":
                await asyncio.sleep(3600)
            if i == 2 and model == "drop-stream":
                assert request.transport is not None
                request.transport.abort()
                return response
            if i == len(events) - 2 and model == "slow-stream":
                await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 30)
            await response.write(event)
            if i == 0:
                self.first_chunk_sent.set()
            if self.chunk_pause_s:
                await asyncio.sleep(self.chunk_pause_s)
        await response.write_eof()
        self.finished.set()
        return response


def _key_of(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return auth[7:]
    return (
        request.headers.get("x-api-key")
        or request.headers.get("api-key")
        or request.query.get("key")
    )


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": {"message": message, "type": "mock_error", "code": f"mock_{status}"}}
    return web.json_response(body, status=status, headers=headers)


def _openai_completion(model: str, doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 1700000000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": f"hello from {model}"},
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
        "echo": doc,
    }


def _openai_events(model: str, usage: bool = False) -> list[bytes]:
    """Three words; with `usage` (stream_options.include_usage) a usage chunk before [DONE]."""

    def chunk(content: str, finish: str | None = None) -> bytes:
        doc = {
            "id": "chatcmpl-mock",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": model,
            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}],
        }
        return b"data: " + json.dumps(doc).encode() + b"\n\n"

    events = [chunk("one "), chunk("two "), chunk("three "), chunk("", "stop")]
    if usage:
        doc = {
            "id": "chatcmpl-mock",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": model,
            "choices": [],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
        }
        events.append(b"data: " + json.dumps(doc).encode() + b"\n\n")
    return [*events, b"data: [DONE]\n\n"]


def _anthropic_message(model: str) -> dict[str, Any]:
    return {
        "id": "msg_mock",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": f"hello from {model}"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 3},
    }


def _anthropic_events(model: str) -> list[bytes]:
    def event(name: str, data: dict[str, Any]) -> bytes:
        return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()

    start = _anthropic_message(model) | {"content": [], "stop_reason": None}
    delta = {"type": "content_block_delta", "index": 0}
    return [
        event("message_start", {"type": "message_start", "message": start}),
        event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        event("content_block_delta", delta | {"delta": {"type": "text_delta", "text": "one "}}),
        event("content_block_delta", delta | {"delta": {"type": "text_delta", "text": "two"}}),
        event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 2},
            },
        ),
        event("message_stop", {"type": "message_stop"}),
    ]
