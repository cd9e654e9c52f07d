"""The upstream HTTP/1.1 client against real sockets: a scripted server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mini_llm import http1
from mini_llm.errors import upstream_failure

from ..helpers import eventually

Answerer = Callable[["Exchange"], Awaitable[None]]


class Exchange:
    """One request as the scripted server read it, and the stream to answer on."""

    def __init__(
        self,
        connection: int,
        head: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.connection = connection
        self.head = head
        self.body = b""
        self.reader = reader
        self.writer = writer

    async def until_hang_up(self) -> None:
        """Wait for the client to close the connection."""
        assert await self.reader.read() == b""

    @property
    def request_line(self) -> str:
        return self.head.split(b"\r\n", 1)[0].decode()

    def header(self, name: str) -> str | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.decode().partition(":")
            if key.lower() == name.lower():
                return value.strip()
        return None

    async def send(self, *parts: bytes) -> None:
        for part in parts:
            self.writer.write(part)
            await self.writer.drain()


class Scripted:
    """A raw HTTP/1.1 server whose answers are written byte for byte by the test."""

    def __init__(self, answer: Answerer) -> None:
        self.answer = answer
        self.exchanges: list[Exchange] = []
        self.connections = 0
        self.closed = asyncio.Event()  # set whenever a client closes a connection
        self.closed_count = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Scripted:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    break
                exchange = Exchange(number, head[:-4], reader, writer)
                length = exchange.header("Content-Length")
                if length:
                    exchange.body = await reader.readexactly(int(length))
                self.exchanges.append(exchange)
                await self.answer(exchange)
                if writer.is_closing():
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.closed_count += 1
            self.closed.set()
            writer.close()


def pool(url: str, limit: int = 10, keepalive_s: float = 30.0) -> http1.Pool:
    return http1.Pool(url, limit, keepalive_s)


async def ask(
    upstream: http1.Pool, body: bytes = b"{}", read_s: float | None = 5.0, method: str = "POST"
) -> http1.Answer:
    return await upstream.request(method, "/v1/chat", [("X-Test", "1")], body, 5.0, read_s)


def json_answer(body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s"
        % (
            len(body),
            extra,
            body,
        )
    )


async def replies(answer: bytes) -> Answerer:
    async def send(exchange: Exchange) -> None:
        await exchange.send(answer)

    return send


@pytest.fixture
async def json_server() -> AsyncIterator[Scripted]:
    async with Scripted(await replies(json_answer(b'{"ok":true}'))) as server:
        yield server


async def test_an_answer_with_a_length_is_read_and_its_connection_kept(
    json_server: Scripted,
) -> None:
    upstream = pool(json_server.url)
    for _ in range(3):
        answer = await ask(upstream, b'{"model":"m"}')
        assert (answer.status, answer.reason) == (200, "OK")
        assert answer.content_type == "application/json"
        assert answer.content_length == 11
        assert await answer.read() == b'{"ok":true}'
        answer.close()
    assert json_server.connections == 1
    first = json_server.exchanges[0]
    assert first.request_line == "POST /v1/chat HTTP/1.1"
    assert first.header("Host") == f"127.0.0.1:{json_server.port}"
    assert first.header("X-Test") == "1"
    assert first.body == b'{"model":"m"}'
    await upstream.close()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.binary(min_size=0, max_size=3000),
    sizes=st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=8),
    cuts=st.lists(st.integers(min_value=1, max_value=400), min_size=0, max_size=12),
    extension=st.sampled_from([b"", b";name=value", b" ; x"]),
    trailer=st.sampled_from([b"", b"X-Trailer: 1\r\n"]),
)
def test_chunked_bodies_are_reassembled_however_they_are_cut(
    body: bytes, sizes: list[int], cuts: list[int], extension: bytes, trailer: bytes
) -> None:
    chunks: list[bytes] = []
    at = 0
    while at < len(body):
        size = sizes[len(chunks) % len(sizes)]
        chunks.append(body[at : at + size])
        at += size
    wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    wire += b"".join(b"%x%s\r\n%s\r\n" % (len(c), extension, c) for c in chunks)
    wire += b"0\r\n" + trailer + b"\r\n"
    parts, at = [], 0
    for cut in cuts:
        parts.append(wire[at : at + cut])
        at += cut
    parts.append(wire[at:])

    async def scenario() -> None:
        async def send(exchange: Exchange) -> None:
            await exchange.send(*[p for p in parts if p])

        async with Scripted(send) as server:
            upstream = pool(server.url)
            for _ in range(2):  # the second request proves the first answer ended exactly
                answer = await ask(upstream)
                assert await answer.read() == body
            assert server.connections == 1
            await upstream.close()

    asyncio.run(scenario())


async def test_a_body_without_length_ends_with_the_connection() -> None:
    async def send(exchange: Exchange) -> None:
        await exchange.send(b"HTTP/1.1 200 OK\r\n\r\npart one, ", b"part two")
        exchange.writer.close()

    async with Scripted(send) as server:
        upstream = pool(server.url)
        answer = await ask(upstream)
        assert await answer.read() == b"part one, part two"
        assert await (await ask(upstream)).read() == b"part one, part two"
        assert server.connections == 2
        await upstream.close()


@pytest.mark.parametrize(
    "extra",
    [b"Connection: close\r\n", b"connection: Close\r\n"],
)
async def test_connection_close_is_honoured(extra: bytes) -> None:
    async with Scripted(await replies(json_answer(b"{}", extra))) as server:
        upstream = pool(server.url)
        for _ in range(2):
            answer = await ask(upstream)
            assert await answer.read() == b"{}"
        assert server.connections == 2
        await upstream.close()


async def test_an_http_1_0_answer_keeps_the_connection_only_when_it_says_so() -> None:
    answers = iter(
        [
            b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\na",
            b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nb",
            b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nc",
        ]
    )

    async def send(exchange: Exchange) -> None:
        await exchange.send(next(answers))

    async with Scripted(send) as server:
        upstream = pool(server.url)
        bodies = [await (await ask(upstream)).read() for _ in range(3)]
        assert bodies == [b"a", b"b", b"c"]
        assert [e.connection for e in server.exchanges] == [1, 1, 2]
        await upstream.close()


async def test_interim_answers_are_skipped() -> None:
    wire = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
    async with Scripted(await replies(wire + json_answer(b"{}"))) as server:
        upstream = pool(server.url)
        answer = await ask(upstream)
        assert answer.status == 200
        assert "Link" not in answer.headers
        assert await answer.read() == b"{}"
        await upstream.close()


async def test_answers_without_a_body_free_the_connection_at_once() -> None:
    answers = iter(
        [
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",  # to a HEAD: no body follows
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
        ]
    )

    async def send(exchange: Exchange) -> None:
        await exchange.send(next(answers))

    async with Scripted(send) as server:
        upstream = pool(server.url)
        assert await (await ask(upstream)).read() == b""
        head = await ask(upstream, b"", method="HEAD")
        assert (head.content_length, await head.read()) == (5, b"")
        assert await (await ask(upstream, b"", method="GET")).read() == b""
        assert server.connections == 1
        assert server.exchanges[1].header("Content-Length") is None
        assert server.exchanges[0].header("Content-Length") == "2"
        await upstream.close()


@pytest.mark.parametrize(
    "wire",
    [
        b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n folded: value\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X-Long: " + b"a" * (http1.MAX_HEAD_BYTES + 10),
    ],
)
async def test_what_is_not_an_http_answer_fails_before_the_body(wire: bytes) -> None:
    async with Scripted(await replies(wire)) as server:
        upstream = pool(server.url)
        with pytest.raises(http1.BadAnswer) as raised:
            await ask(upstream)
        await upstream.close()
    refused = upstream_failure("local", raised.value)
    assert (refused.status, refused.code) == (502, "upstream_error")
    assert "not HTTP/1.1" in refused.message


@pytest.mark.parametrize(
    "wire",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n",
    ],
)
async def test_a_broken_chunk_fails_the_body(wire: bytes) -> None:
    async with Scripted(await replies(wire)) as server:
        upstream = pool(server.url)
        answer = await ask(upstream)
        with pytest.raises(aiohttp.ClientPayloadError):
            await answer.read()
        await upstream.close()


async def test_a_body_cut_short_is_an_error_not_an_end() -> None:
    async def send(exchange: Exchange) -> None:
        await exchange.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
        exchange.writer.close()

    async with Scripted(send) as server:
        upstream = pool(server.url)
        answer = await ask(upstream)
        assert await answer.readany() == b"only this"
        with pytest.raises(aiohttp.ClientPayloadError):
            await answer.readany()
        await upstream.close()


async def test_a_close_before_the_answer_is_a_disconnect() -> None:
    async def hang_up(exchange: Exchange) -> None:
        exchange.writer.close()

    async with Scripted(hang_up) as server:
        upstream = pool(server.url)
        with pytest.raises(aiohttp.ServerDisconnectedError) as raised:
            await ask(upstream)
        await upstream.close()
    refused = upstream_failure("local", raised.value)
    assert (refused.status, refused.code, refused.retryable) == (502, "upstream_error", True)


async def test_silence_before_the_head_is_a_read_timeout() -> None:
    release = asyncio.Event()

    async def stall(exchange: Exchange) -> None:
        await release.wait()

    async with Scripted(stall) as server:
        upstream = pool(server.url)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(aiohttp.SocketTimeoutError) as raised:
            await ask(upstream, read_s=0.2)
        assert 0.2 <= loop.time() - started < 2
        refused = upstream_failure("local", raised.value)
        assert (refused.status, refused.code) == (504, "upstream_timeout")
        release.set()
        await upstream.close()


async def test_silence_in_the_body_is_a_read_timeout_but_steady_bytes_are_not() -> None:
    release = asyncio.Event()

    async def trickle_then_stall(exchange: Exchange) -> None:
        await exchange.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(6):  # a byte every 0.1 s: 0.6 s in all, never 0.3 s of silence
            await exchange.send(b"1\r\nx\r\n")
            await asyncio.sleep(0.1)
        await release.wait()

    async with Scripted(trickle_then_stall) as server:
        upstream = pool(server.url)
        answer = await ask(upstream, read_s=0.3)
        got = []

        async def read_all() -> None:
            while chunk := await answer.readany():
                got.append(chunk)

        with pytest.raises(aiohttp.SocketTimeoutError):
            await read_all()
        assert b"".join(got) == b"x" * 6
        release.set()
        await upstream.close()


async def test_a_reader_that_is_slow_is_not_timed_out() -> None:
    async with Scripted(await replies(json_answer(b"{}"))) as server:
        upstream = pool(server.url)
        answer = await ask(upstream, read_s=0.1)
        await asyncio.sleep(0.3)  # the reader is busy; the upstream has said everything
        assert await answer.read() == b"{}"
        await upstream.close()


async def test_closing_an_answer_mid_body_closes_its_connection() -> None:
    async def stream(exchange: Exchange) -> None:
        await exchange.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await exchange.until_hang_up()

    async with Scripted(stream) as server:
        upstream = pool(server.url)
        answer = await ask(upstream)
        assert await answer.readany() == b"first"
        answer.close()
        await asyncio.wait_for(server.closed.wait(), 5)  # the upstream sees the hang-up
        with pytest.raises(aiohttp.ClientConnectionError):
            await answer.readany()
        await upstream.close()


async def test_a_cancelled_request_closes_its_connection() -> None:
    arrived = asyncio.Event()

    async def stall(exchange: Exchange) -> None:
        arrived.set()
        await exchange.until_hang_up()

    async with Scripted(stall) as server:
        upstream = pool(server.url)
        task = asyncio.ensure_future(ask(upstream))
        await arrived.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(server.closed.wait(), 5)
        assert not upstream._all and not upstream._connecting
        await upstream.close()


async def test_the_limit_queues_requests_for_a_free_connection() -> None:
    gate = asyncio.Event()
    two_in = asyncio.Event()
    in_flight = 0
    most = 0

    async def slow(exchange: Exchange) -> None:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        if in_flight == 2:
            two_in.set()
        await gate.wait()
        in_flight -= 1
        await exchange.send(json_answer(b"{}"))

    async with Scripted(slow) as server:
        upstream = pool(server.url, limit=2)
        tasks = [asyncio.ensure_future(ask(upstream)) for _ in range(5)]
        await asyncio.wait_for(two_in.wait(), 5)
        assert not any(t.done() for t in tasks)
        gate.set()
        for answer in await asyncio.gather(*tasks):
            assert await answer.read() == b"{}"
        assert most == 2
        assert server.connections == 2
        await upstream.close()


async def test_many_requests_share_a_few_connections(json_server: Scripted) -> None:
    upstream = pool(json_server.url, limit=4)

    async def client() -> None:
        for _ in range(20):
            answer = await ask(upstream)
            assert await answer.read() == b'{"ok":true}'

    await asyncio.wait_for(asyncio.gather(*(client() for _ in range(16))), 20)
    assert len(json_server.exchanges) == 320
    assert json_server.connections <= 4
    await upstream.close()


async def test_idle_connections_close_after_keepalive(json_server: Scripted) -> None:
    upstream = pool(json_server.url, keepalive_s=0.2)
    await (await ask(upstream)).read()
    await asyncio.wait_for(json_server.closed.wait(), 5)  # closed by the pool, not reused
    await (await ask(upstream)).read()
    assert json_server.connections == 2
    await upstream.close()


async def test_a_connection_the_upstream_closed_while_idle_is_not_used() -> None:
    async def answer_then_close(exchange: Exchange) -> None:
        await exchange.send(json_answer(b"{}"))
        exchange.writer.close()  # without saying Connection: close

    async with Scripted(answer_then_close) as server:
        upstream = pool(server.url)
        await (await ask(upstream)).read()
        await asyncio.wait_for(server.closed.wait(), 5)
        await eventually(lambda: not upstream._idle)  # the close reaches the pool
        assert await (await ask(upstream)).read() == b"{}"
        assert server.connections == 2
        await upstream.close()


async def test_a_slow_reader_gets_every_byte_of_a_large_body() -> None:
    body = bytes(range(256)) * 8192  # 2 MiB, beyond what is buffered before reading pauses
    async with Scripted(await replies(json_answer(body))) as server:
        upstream = pool(server.url)
        answer = await ask(upstream)
        got = bytearray()
        while chunk := await answer.readany():
            got += chunk
            await asyncio.sleep(0)
        assert bytes(got) == body
        assert await (await ask(upstream)).read() == body  # and the connection is reusable
        assert server.connections == 1
        await upstream.close()


async def test_a_refused_connection_is_unreachable(unused_port: int) -> None:
    upstream = pool(f"http://127.0.0.1:{unused_port}")
    with pytest.raises(http1.UpstreamUnreachable) as raised:
        await ask(upstream)
    assert not upstream._all and not upstream._connecting
    await upstream.close()
    refused = upstream_failure("local", raised.value)
    assert (refused.status, refused.code) == (502, "upstream_unreachable")


async def test_a_header_with_a_line_break_is_refused(json_server: Scripted) -> None:
    upstream = pool(json_server.url)
    with pytest.raises(ValueError, match="line break"):
        await upstream.request("POST", "/v1/chat", [("X-A", "1\r\nX-Injected: 1")], b"", 5, 5)
    assert json_server.exchanges == []
    await upstream.close()


async def test_a_target_with_unsafe_characters_is_percent_encoded(json_server: Scripted) -> None:
    upstream = pool(json_server.url)
    await (await upstream.request("POST", '/v1/a b"c', [], b"", 5, 5)).read()
    assert json_server.exchanges[0].request_line == "POST /v1/a%20b%22c HTTP/1.1"
    await upstream.close()


async def test_a_host_header_given_replaces_the_url_s(json_server: Scripted) -> None:
    upstream = pool(json_server.url)
    await (await upstream.request("POST", "/", [("host", "api.example.test")], b"", 5, 5)).read()
    head = json_server.exchanges[0].head.lower()
    assert head.count(b"\r\nhost:") == 1
    assert json_server.exchanges[0].header("Host") == "api.example.test"
    await upstream.close()


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://example.test", "example.test"),
        ("http://example.test:80/v1", "example.test"),
        ("https://example.test:443", "example.test"),
        ("https://example.test:8443", "example.test:8443"),
        ("http://[::1]:8080", "[::1]:8080"),
    ],
)
def test_the_host_header_leaves_out_the_default_port(url: str, host: str) -> None:
    assert http1.Pool(url, 1, 1)._host_line == f"Host: {host}"


@pytest.fixture
def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost: (key, certificate)."""
    if shutil.which("openssl") is None:
        if os.environ.get("CI"):
            pytest.fail("the openssl command is not installed (apt-get install openssl)")
        pytest.skip("the openssl command is not installed")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost"),
        ],
        check=True,
        capture_output=True,
    )
    return key, cert


async def test_https_upstreams_are_verified_against_the_system_store(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    key, cert = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(json_answer(b'{"tls":true}'))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        http1._tls_context.cache_clear()  # the store is read when the context is made
        untrusted = pool(f"https://localhost:{port}")
        with pytest.raises(http1.UpstreamUnreachable):
            await untrusted.request("GET", "/", [], b"", 5, 5)
        await untrusted.close()

        http1._tls_context.cache_clear()
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        trusted = pool(f"https://localhost:{port}")
        answer = await trusted.request("GET", "/", [], b"", 5, 5)
        assert await answer.read() == b'{"tls":true}'
        await trusted.close()
    finally:
        http1._tls_context.cache_clear()
        server.close()
        await server.wait_closed()
