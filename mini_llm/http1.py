"""The upstream client: HTTP/1.1 over pooled keep-alive connections, bodies read as they come.

A proxied call needs little of a general HTTP client: no redirects, URL parsing, default
headers or tracing; no cookie jar (a cookie set in one client's answer is never sent with
another's request) and no decompression (compressed bodies pass through untouched). This
one writes the request in one go, parses the status line and headers, hands the body over
as it arrives (by Content-Length, chunked, or until the upstream closes), and puts the
connection back in its pool the moment the body is complete.

Failures are aiohttp's exception types, so callers tell them apart as they would for
aiohttp's own client: a refused or unresolvable connection is `UpstreamUnreachable`, a
connect that takes too long `aiohttp.ConnectionTimeoutError`, silence longer than the read
timeout `aiohttp.SocketTimeoutError`, a connection closed before the answer
`aiohttp.ServerDisconnectedError`, and a body cut short or an answer that is not HTTP/1.1
`aiohttp.ClientPayloadError`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import re
import socket
import ssl
from collections import deque
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, cast
from urllib.parse import quote, urlsplit

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

# An upstream's status line and headers may take this much; more is not a valid answer.
MAX_HEAD_BYTES = 64 * 1024
# Body bytes held for a reader that is behind before the socket stops being read.
HIGH_WATER_BYTES = 256 * 1024
DNS_TTL_S = 300.0

_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([1-9][0-9][0-9])(?: ([^\r\n]*))?")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_TARGET = re.compile(r"/[!#-~]*")  # visible ASCII: sent as it is
_TARGET_SAFE = "/%?#[]@!$&'()*+,;=:-._~"

# Where a connection is in reading an answer.
_IDLE, _HEAD, _LENGTH, _UNTIL_CLOSE, _CHUNK_HEAD, _CHUNK_DATA, _CHUNK_END, _TRAILERS = range(8)


class UpstreamUnreachable(aiohttp.ClientConnectionError):
    """No connection could be made: refused, no route, name not resolved, TLS failed."""


class BadAnswer(aiohttp.ClientPayloadError):
    """The upstream's bytes are not an HTTP/1.1 answer."""


@lru_cache(maxsize=1)
def _tls_context() -> ssl.SSLContext:
    # One context for the process: loading the CA store is the costly part.
    return ssl.create_default_context()


class Answer:
    """An upstream answer: status and headers, then the body as it arrives."""

    __slots__ = (
        "_chunks",
        "_conn",
        "_eof",
        "_error",
        "_size",
        "_waiter",
        "content_length",
        "content_type",
        "headers",
        "reason",
        "status",
    )

    def __init__(
        self, conn: _Connection, status: int, reason: str, headers: CIMultiDictProxy[str]
    ) -> None:
        self._conn: _Connection | None = conn
        self.status = status
        self.reason = reason
        self.headers = headers
        kind = headers.get("Content-Type")
        self.content_type = (
            kind.partition(";")[0].strip().lower() if kind else "application/octet-stream"
        )
        length = headers.get("Content-Length")
        self.content_length = int(length) if length is not None and length.isdigit() else None
        self._chunks: list[bytes] = []
        self._size = 0  # bytes in _chunks
        self._eof = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    @property
    def content(self) -> Answer:
        return self

    async def readany(self) -> bytes:
        """The body bytes that have arrived, waiting for some; b"" once the body is complete."""
        chunks = self._chunks
        while not chunks:
            if self._error is not None:
                raise self._error
            if self._eof:
                return b""
            conn = self._conn
            assert conn is not None
            self._waiter = waiter = conn.loop.create_future()
            conn.reader_waits()
            try:
                await waiter
            finally:
                self._waiter = None
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._size = 0
        conn = self._conn
        if conn is not None and conn.paused:
            conn.resume()
        return data

    async def read(self) -> bytes:
        """The whole body."""
        parts = []
        while chunk := await self.readany():
            parts.append(chunk)
        return b"".join(parts)

    def close(self) -> None:
        """Done with this answer: a body still arriving is cut off with its connection."""
        conn = self._conn
        if conn is not None:
            self._conn = None
            conn.abort()
        if not self._eof and self._error is None:
            self._error = aiohttp.ClientConnectionError("Connection closed")
        self._chunks.clear()

    # Called by the connection.

    def _feed(self, data: bytes) -> int:
        """Add body bytes; how many are now waiting to be read."""
        self._chunks.append(data)
        self._size += len(data)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return self._size

    def _end(self, error: BaseException | None) -> None:
        self._conn = None
        if error is None:
            self._eof = True
        else:
            self._error = error
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _Connection(asyncio.Protocol):
    """One upstream connection, reading one answer at a time."""

    __slots__ = (
        "_answer",
        "_head",
        "_keep",
        "_last_data",
        "_left",
        "_no_body",
        "_read_s",
        "_rest",
        "_state",
        "_timer",
        "_wait_from",
        "closed",
        "idle_since",
        "loop",
        "paused",
        "pool",
        "transport",
    )

    def __init__(self, pool: Pool, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.paused = False
        self._state = _IDLE
        self._rest = b""  # bytes received and not parsed yet
        self._left = 0  # bytes left of the body or of the current chunk
        self._keep = False  # the connection may serve another request after this answer
        self._no_body = False  # the request was HEAD: no body follows the head
        self._head: asyncio.Future[Answer] | None = None
        self._answer: Answer | None = None
        self._read_s: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_data = 0.0
        self._wait_from = 0.0

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        state = self._state
        if state == _UNTIL_CLOSE and self._answer is not None:
            self._finish()  # the close is how this body ends
        elif state == _HEAD:
            self._fail(aiohttp.ServerDisconnectedError())
        elif state != _IDLE:
            self._fail(aiohttp.ClientPayloadError("Response payload is not completed"))
        else:
            self.abort()

    def data_received(self, data: bytes) -> None:
        if self._read_s is not None:
            self._last_data = self.loop.time()
        if self._rest:
            data = self._rest + data
            self._rest = b""
        try:
            self._parse(data)
        except BadAnswer as exc:
            self._fail(exc)

    # The pool's side.

    async def exchange(
        self, head: bytes, body: bytes, no_body: bool, read_s: float | None
    ) -> Answer:
        """Send one request and wait for the status line and headers of its answer."""
        loop = self.loop
        self._state = _HEAD
        self._no_body = no_body
        waiter: asyncio.Future[Answer] = loop.create_future()
        self._head = waiter
        self._read_s = read_s
        if read_s is not None:
            self._last_data = self._wait_from = now = loop.time()
            self._timer = loop.call_at(now + read_s, self._check_silence)
        transport = self.transport
        assert transport is not None
        if body:
            transport.writelines((head, body))
        else:
            transport.write(head)
        return await waiter

    def reader_waits(self) -> None:
        if self._read_s is not None:
            self._wait_from = self.loop.time()

    def resume(self) -> None:
        self.paused = False
        if self.transport is not None:
            self.transport.resume_reading()

    def abort(self) -> None:
        """Close now, whatever was underway; the pool forgets the connection."""
        if self.closed:
            return
        self.closed = True
        self._cancel_timer()
        self._state = _IDLE
        if self._head is not None or self._answer is not None:
            self._fail(aiohttp.ServerDisconnectedError())
        if self.transport is not None:
            self.transport.close()
        self.pool.forget(self)

    # Parsing.

    def _parse(self, data: bytes) -> None:
        pos, end = 0, len(data)
        while pos < end and not self.closed:
            state = self._state
            if state in (_LENGTH, _CHUNK_DATA):
                stop = pos + self._left
                if stop >= end:
                    self._left = stop - end
                    self._body(data[pos:] if pos else data)
                    pos = end
                else:
                    self._left = 0
                    self._body(data[pos:stop])
                    pos = stop
                if self._left == 0:
                    if state == _LENGTH:
                        self._finish()
                    else:
                        self._state = _CHUNK_END
            elif state in (_CHUNK_HEAD, _CHUNK_END, _TRAILERS):
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    if end - pos > MAX_HEAD_BYTES:
                        raise BadAnswer("a chunk's size line is too long")
                    break
                line = data[pos:eol]
                pos = eol + 2
                if state == _CHUNK_END:
                    if line:
                        raise BadAnswer("a chunk does not end where its size says")
                    self._state = _CHUNK_HEAD
                elif state == _TRAILERS:
                    if not line:
                        self._finish()
                else:
                    size = line.partition(b";")[0].strip(b" \t")
                    if not _CHUNK_SIZE.fullmatch(size):
                        raise BadAnswer("a chunk's size is not a hexadecimal number")
                    self._left = int(size, 16)
                    self._state = _CHUNK_DATA if self._left else _TRAILERS
            elif state == _HEAD:
                stop = data.find(b"\r\n\r\n", pos)
                if stop < 0:
                    if end - pos > MAX_HEAD_BYTES:
                        raise BadAnswer("the answer's headers are too long")
                    break
                self._on_head(data[pos:stop])
                pos = stop + 4
            elif state == _UNTIL_CLOSE:
                self._body(data[pos:] if pos else data)
                pos = end
            else:  # bytes nobody asked for: the connection cannot be trusted again
                self.abort()
                return
        if pos < end and not self.closed:
            self._rest = data[pos:]

    def _on_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        status_line = _STATUS_LINE.fullmatch(lines[0])
        if status_line is None:
            raise BadAnswer("the answer does not begin with an HTTP/1.1 status line")
        minor, code, reason = status_line.groups()
        status = int(code)
        pairs = []
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not _TOKEN.fullmatch(name):
                raise BadAnswer("the answer has a malformed header line")
            pairs.append(
                (name.decode("ascii"), value.strip(b" \t").decode("utf-8", "surrogateescape"))
            )
        if status < 200:
            if status == 101:
                raise BadAnswer("the upstream switched protocols, which was not asked for")
            return  # an interim answer (100 Continue, 103 Early Hints): the real one follows
        headers = CIMultiDictProxy(CIMultiDict(pairs))
        connection = headers.get("Connection", "").lower()
        self._keep = "close" not in connection if minor == b"1" else "keep-alive" in connection
        coding = headers.get("Transfer-Encoding")
        if self._no_body or status == 204 or status == 304:
            self._state, self._left = _LENGTH, 0
        elif coding is not None:
            if ",".join(headers.getall("Transfer-Encoding")).lower().rstrip().endswith("chunked"):
                self._state = _CHUNK_HEAD
            else:
                self._state = _UNTIL_CLOSE
            if "Content-Length" in headers:  # a smuggling attempt or a broken server
                self._keep = False
        elif (length := headers.get("Content-Length")) is not None:
            if not length.isdigit() or len(set(headers.getall("Content-Length"))) > 1:
                raise BadAnswer("the answer's Content-Length is not one number")
            self._state, self._left = _LENGTH, int(length)
        else:
            self._state, self._keep = _UNTIL_CLOSE, False
        answer = Answer(self, status, (reason or b"").decode("latin-1"), headers)
        self._answer = answer
        waiter = self._head
        self._head = None
        if waiter is None or waiter.done():  # the caller is gone
            self.abort()
            return
        waiter.set_result(answer)
        if self._state == _LENGTH and self._left == 0:
            self._finish()

    def _body(self, data: bytes) -> None:
        answer = self._answer
        if answer is None:
            return
        waiting = answer._feed(data)
        transport = self.transport
        if waiting > HIGH_WATER_BYTES and not self.paused and transport is not None:
            self.paused = True
            transport.pause_reading()

    def _finish(self) -> None:
        """The body is complete: hand it over and free the connection."""
        answer = self._answer
        self._answer = None
        self._state = _IDLE
        self._read_s = None
        self._cancel_timer()
        if answer is not None:
            answer._end(None)
        if self.closed:
            return
        if self.paused:
            self.resume()
        if self._keep:  # bytes after the body, if any, close it then (see _parse)
            self.pool.release(self)
        else:
            self.abort()

    def _fail(self, error: BaseException) -> None:
        """End what is underway with `error` and close."""
        waiter, self._head = self._head, None
        answer, self._answer = self._answer, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        if answer is not None:
            answer._end(error)
        self.abort()

    # The read timeout: one timer per answer, moved only when it fires.

    def _check_silence(self) -> None:
        self._timer = None
        read_s = self._read_s
        if read_s is None or self._state == _IDLE:
            return
        now = self.loop.time()
        answer = self._answer
        waiting = self._state == _HEAD or (answer is not None and answer._waiter is not None)
        deadline = max(self._last_data, self._wait_from) + read_s
        if waiting and now >= deadline:
            self._fail(aiohttp.SocketTimeoutError("Timeout on reading data from socket"))
        else:
            at = deadline if waiting else now + read_s
            self._timer = self.loop.call_at(at, self._check_silence)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class Pool:
    """Keep-alive connections to one origin, at most `limit` open at once (0: no limit)."""

    def __init__(self, base_url: str, limit: int, keepalive_s: float) -> None:
        parts = urlsplit(base_url)
        self.tls = parts.scheme == "https"
        self.host = parts.hostname or ""
        default_port = 443 if self.tls else 80
        self.port = parts.port or default_port
        shown = f"[{self.host}]" if ":" in self.host else self.host
        if self.port != default_port:
            shown += f":{self.port}"
        self._host_line = f"Host: {shown}"
        self.limit = limit
        self.keepalive_s = keepalive_s
        self.closed = False
        self._all: set[_Connection] = set()  # open: idle or busy
        self._connecting = 0
        self._idle: list[_Connection] = []
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._sweep: asyncio.TimerHandle | None = None
        self._addresses: tuple[float, list[tuple[Any, ...]]] | None = None
        try:  # an address needs no lookup (nor the thread pool that lookups run in)
            ipaddress.ip_address(self.host)
            self._addresses = (math.inf, [(self.host, self.port)])
        except ValueError:
            pass

    async def request(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        connect_s: float | None,
        read_s: float | None,
    ) -> Answer:
        """Send a request for `target` (path and query); its answer once its head is in."""
        head = self._head(method, target, headers, body)
        conn = self._take_idle() or await self._connect(connect_s)
        try:
            return await conn.exchange(head, body, method == "HEAD", read_s)
        except BaseException:
            conn.abort()
            raise

    def _head(
        self, method: str, target: str, headers: Sequence[tuple[str, str]], body: bytes
    ) -> bytes:
        if not _TARGET.fullmatch(target):
            target = quote(target, safe=_TARGET_SAFE)
        lines = [f"{method} {target} HTTP/1.1"]
        if not any(len(name) == 4 and name.lower() == "host" for name, _ in headers):
            lines.append(self._host_line)  # unless the table's headers set their own
        lines += [f"{name}: {value}" for name, value in headers]
        if body or method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
            lines.append(f"Content-Length: {len(body)}")
        lines.append("\r\n")
        text = "\r\n".join(lines)
        breaks = len(lines)
        if text.count("\n") != breaks or text.count("\r") != breaks:
            raise ValueError("a request header holds a line break")
        return text.encode("utf-8", "surrogateescape")

    # Connections.

    def _take_idle(self) -> _Connection | None:
        idle = self._idle
        if not idle:
            return None
        too_old = asyncio.get_running_loop().time() - self.keepalive_s
        while idle:
            conn = idle.pop()
            if conn.closed or conn.transport is None or conn.transport.is_closing():
                continue
            if conn.idle_since > too_old:
                return conn
            conn.abort()
        return None

    async def _connect(self, timeout: float | None) -> _Connection:
        if self.closed:
            raise UpstreamUnreachable("the connection pool is closed")
        loop = asyncio.get_running_loop()
        while not self._has_room():
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # pass the wake-up we were given to the next in line
                raise
            conn = self._take_idle()
            if conn is not None:
                return conn
        self._connecting += 1
        try:
            return await asyncio.wait_for(self._open_connection(loop), timeout)
        except asyncio.TimeoutError:
            raise aiohttp.ConnectionTimeoutError(
                f"Connection timeout to host {self.host}:{self.port}"
            ) from None
        except OSError as exc:
            raise UpstreamUnreachable(f"Cannot connect to {self.host}:{self.port}: {exc}") from None
        finally:
            self._connecting -= 1
            if self._has_room():  # this one failed: the next in line may try
                self._wake()

    def _has_room(self) -> bool:
        return not self.limit or len(self._all) + self._connecting < self.limit

    async def _open_connection(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        error: OSError | None = None
        for address in await self._resolve(loop):
            try:
                _, conn = await loop.create_connection(
                    lambda: _Connection(self, loop),
                    address[0],
                    address[1],
                    ssl=_tls_context() if self.tls else None,
                    server_hostname=self.host if self.tls else None,
                )
                self._all.add(conn)
                return conn
            except OSError as exc:
                error = exc
        raise error or OSError(f"no address for {self.host}")

    async def _resolve(self, loop: asyncio.AbstractEventLoop) -> list[tuple[Any, ...]]:
        cached = self._addresses
        now = loop.time()
        if cached is not None and cached[0] > now:
            return cached[1]
        infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        addresses = [info[4] for info in infos]
        self._addresses = (now + DNS_TTL_S, addresses)
        return addresses

    def release(self, conn: _Connection) -> None:
        """A connection whose answer is complete: kept for the next request."""
        if self.closed:
            conn.abort()
            return
        conn.idle_since = conn.loop.time()
        self._idle.append(conn)
        self._wake()
        if self._sweep is None:
            self._sweep = conn.loop.call_at(conn.idle_since + self.keepalive_s, self._close_old)

    def forget(self, conn: _Connection) -> None:
        """A connection that closed."""
        self._all.discard(conn)
        if conn in self._idle:
            self._idle.remove(conn)
        self._wake()

    def _wake(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _close_old(self) -> None:
        self._sweep = None
        if not self._idle:
            return
        loop = asyncio.get_running_loop()
        too_old = loop.time() - self.keepalive_s
        for conn in [c for c in self._idle if c.idle_since <= too_old]:
            conn.abort()
        if self._idle:
            oldest = min(c.idle_since for c in self._idle)
            self._sweep = loop.call_at(oldest + self.keepalive_s, self._close_old)

    async def close(self) -> None:
        """Close every connection, cutting off answers still arriving."""
        self.closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for conn in list(self._all):
            conn.abort()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(UpstreamUnreachable("the connection pool is closed"))
