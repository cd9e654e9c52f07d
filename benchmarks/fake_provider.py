"""A fast mock LLM provider (OpenAI chat JSON + SSE, Anthropic messages) for the benchmarks.

It speaks HTTP/1.1 on a bare asyncio.Protocol rather than aiohttp.web because it shares a
core with the load generator: at ~6k req/s an aiohttp mock burns most of that core and
would cap every contender at the same number. This one costs ~4x less per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import socket
import time
from dataclasses import dataclass

# A directive in the request body (any message text) or in a header sets the stream's
# shape per request, so one mock serves both the fast and the slow stream and every proxy
# forwards it: LiteLLM and Portkey rebuild headers but keep the message text.
_DIRECTIVE = re.compile(rb"mock-(delay-ms|chunks)=(\d+)")
_TEXT = "Hello from the mock upstream."
_CREDENTIALS = (b"authorization", b"x-api-key", b"api-key")
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}


@dataclass(frozen=True)
class Shape:
    """Default stream shape: pause between content chunks and how many there are."""

    delay_s: float
    chunks: int


@dataclass
class Request:
    """One parsed request; header names lower-cased."""

    method: str
    path: str
    headers: dict[bytes, bytes]
    body: bytes


def _head(status: int, content_type: str, length: int | None) -> bytes:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: {content_type}\r\n"
        f"{framing}\r\nx-mock: 1\r\n\r\n"
    ).encode()


def _json(status: int, obj: object) -> bytes:
    body = json.dumps(obj, separators=(",", ":")).encode()
    return _head(status, "application/json", len(body)) + body


def _error(status: int, message: str) -> bytes:
    return _json(
        status, {"error": {"message": message, "type": "invalid_request_error", "code": status}}
    )


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _sse(obj: object, event: str | None = None) -> bytes:
    line = b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"
    return _chunk(f"event: {event}\n".encode() + line if event else line)


def _openai_stream(model: str, chunks: int) -> list[bytes]:
    base = {
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }

    def one(delta: dict[str, str], finish: str | None = None) -> bytes:
        return _sse({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    # The role chunk goes out at once (as OpenAI does), so time-to-first-chunk through a
    # proxy measures the proxy, not the mock's pacing; a buffering proxy still shows up.
    first = one({"role": "assistant", "content": ""})
    middle = [one({"content": f"tok{i} "}) for i in range(chunks)]
    return [first, *middle, one({}, "stop") + _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"]


def _anthropic_stream(model: str, chunks: int) -> list[bytes]:
    usage = {"input_tokens": 9, "output_tokens": 0}
    message = {
        "id": "msg_mock",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
    }
    first = _sse(
        {"type": "message_start", "message": {**message, "stop_reason": None, "usage": usage}},
        "message_start",
    ) + _sse(
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        "content_block_start",
    )
    middle = [
        _sse(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": f"tok{i} "},
            },
            "content_block_delta",
        )
        for i in range(chunks)
    ]
    last = (
        _sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
        + _sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": chunks},
            },
            "message_delta",
        )
        + _sse({"type": "message_stop"}, "message_stop")
        + b"0\r\n\r\n"
    )
    return [first, *middle, last]


def respond(req: Request, shape: Shape) -> list[bytes]:
    """The response as pieces; the pieces after the first are paced by the stream delay."""
    if req.method == "GET" and req.path in ("/health", "/v1/health"):
        return [_json(200, {"status": "ok"})]
    if req.method == "GET" and req.path == "/v1/models":
        data = [{"id": "upstream-model", "object": "model", "created": 0, "owned_by": "mock"}]
        return [_json(200, {"object": "list", "data": data})]
    anthropic = req.path == "/v1/messages"
    if req.method != "POST" or not (anthropic or req.path == "/v1/chat/completions"):
        return [_error(404, f"no route {req.method} {req.path}")]
    # A proxy that forgot to add credentials shows up as errors in the load figures.
    if not any(name in req.headers for name in _CREDENTIALS):
        return [_error(401, "missing credentials")]
    try:
        body = json.loads(req.body)
    except ValueError:
        return [_error(400, "body is not JSON")]
    if not isinstance(body, dict):
        return [_error(400, "body is not an object")]
    model = str(body.get("model", ""))
    if not body.get("stream"):
        if anthropic:
            content = [{"type": "text", "text": _TEXT}]
            usage = {"input_tokens": 9, "output_tokens": 7}
            msg = {
                "id": "msg_mock",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content,
            }
            return [
                _json(
                    200, {**msg, "stop_reason": "end_turn", "stop_sequence": None, "usage": usage}
                )
            ]
        message = {"role": "assistant", "content": _TEXT}
        return [
            _json(
                200,
                {
                    "id": "chatcmpl-mock",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16},
                },
            )
        ]
    chunks = shape.chunks
    for key, value in _DIRECTIVE.findall(req.body):
        if key == b"chunks":
            chunks = int(value)
    pieces = (_anthropic_stream if anthropic else _openai_stream)(model, chunks)
    return [_head(200, "text/event-stream", None) + pieces[0], *pieces[1:]]


def _delay(req: Request, shape: Shape) -> float:
    delay = shape.delay_s
    for key, value in _DIRECTIVE.findall(req.body):
        if key == b"delay-ms":
            delay = int(value) / 1000.0
    if b"x-mock-delay-ms" in req.headers:
        delay = float(req.headers[b"x-mock-delay-ms"]) / 1000.0
    return delay


class MockProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive server for one connection; requests are answered in order."""

    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        self.buf = b""
        self.busy = False  # a paced stream is being written; later requests wait for it
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        # asyncio only sets TCP_NODELAY when the socket's proto is IPPROTO_TCP, which accepted
        # sockets of socket.create_server() are not; without it Nagle holds each SSE event
        # until the client's delayed ACK (40 ms) and every stream looks 40 ms slow.
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._drain()

    def _parse(self) -> Request | None:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        lines = self.buf[:end].split(b"\r\n")
        method, path, _ = lines[0].decode("latin-1").split(" ", 2)
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        start = end + 4
        if b"chunked" in headers.get(b"transfer-encoding", b""):
            body, used = _dechunk(self.buf, start)
            if used < 0:
                return None
            self.buf = self.buf[used:]
        else:
            length = int(headers.get(b"content-length", b"0"))
            if len(self.buf) < start + length:
                return None
            body, self.buf = self.buf[start : start + length], self.buf[start + length :]
        return Request(method, path.partition("?")[0], headers, body)

    def _drain(self) -> None:
        while self.transport is not None and (req := self._parse()) is not None:
            pieces = respond(req, self.shape)
            delay = _delay(req, self.shape) if len(pieces) > 1 else 0.0
            if delay <= 0:
                # One send per SSE event, as a real provider's stream arrives, so proxies
                # see (and pay for) separate chunks even on the fast stream.
                for piece in pieces:
                    self.transport.write(piece)
                continue
            self.busy = True
            self.transport.write(pieces[0])
            asyncio.get_running_loop().call_later(delay, self._pace, pieces[1:], delay)
            return

    def _pace(self, rest: list[bytes], delay: float) -> None:
        if self.transport is None:
            return
        self.transport.write(rest[0])
        if len(rest) > 1:
            asyncio.get_running_loop().call_later(delay, self._pace, rest[1:], delay)
        else:
            self.busy = False
            self._drain()


def _dechunk(buf: bytes, pos: int) -> tuple[bytes, int]:
    """Decode a chunked body starting at pos; (body, end offset), or (b"", -1) if incomplete."""
    parts: list[bytes] = []
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return b"", -1
        size = int(buf[pos:eol].split(b";")[0], 16)
        if size == 0:
            trailer_end = buf.find(b"\r\n\r\n", eol)
            return (b"".join(parts), trailer_end + 4) if trailer_end >= 0 else (b"", -1)
        if len(buf) < eol + 2 + size + 2:
            return b"", -1
        parts.append(buf[eol + 2 : eol + 2 + size])
        pos = eol + 2 + size + 2


async def serve(host: str, port: int, shape: Shape) -> None:
    sock = socket.create_server((host, port), backlog=4096)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: MockProtocol(shape), sock=sock)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"mock listening on http://{host}:{sock.getsockname()[1]}", flush=True)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--delay-ms", type=float, default=0.0, help="default pause between SSE chunks"
    )
    parser.add_argument("--chunks", type=int, default=8, help="default content chunks per stream")
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, Shape(args.delay_ms / 1000.0, args.chunks)))


if __name__ == "__main__":
    main()
