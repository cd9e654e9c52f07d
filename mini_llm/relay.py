"""Relay an upstream answer to the client: status and headers at once, then every chunk.

The last layer of forwarding (see proxy.py). Readers of what passes through (token usage,
stream translation, time to first byte) hook in at `relay`'s read loop, never by buffering.
Time spent awaiting the upstream's reads is counted apart: the gateway's overhead is what
is left of a request's time once the waits on the upstream are taken out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from typing import NamedTuple, Protocol

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from .access import add_cors_headers
from .errors import ProxyError, stream_error_event
from .translate import (
    DROPPED_HEADER,
    RESPONSE_HEADERS_TO_DROP,
    content_type,
    translate_answer,
    translate_error,
)
from .translation import Translation
from .upstream import HOP_BY_HOP
from .usage import Usage, UsageScanner, scanner_for, usage_in

log = logging.getLogger("mini_llm")


class Body(Protocol):
    async def readany(self) -> bytes: ...


class Answer(Protocol):
    """What relay reads of an answer: an upstream's (http1.Answer), or a builtin provider's."""

    @property
    def status(self) -> int: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def headers(self) -> CIMultiDictProxy[str]: ...
    @property
    def content_type(self) -> str: ...
    @property
    def content_length(self) -> int | None: ...
    @property
    def content(self) -> Body: ...
    async def read(self) -> bytes: ...
    def close(self) -> None: ...


# Answers up to this size with a Content-Length are read whole and sent in one write.
WHOLE_ANSWER_MAX_BYTES = 64 * 1024
_RESPONSE_DROP = HOP_BY_HOP | {"x-request-id"}
# How an upstream answer breaks off once its headers are in.
BROKEN_OFF = (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, asyncio.TimeoutError)
# Milliseconds the gateway added; on a stream, up to the moment its headers were sent.
OVERHEAD_HEADER = "x-mini-llm-overhead-ms"


class Relayed(NamedTuple):
    """An answer relayed, and what was learnt while relaying it."""

    response: web.StreamResponse
    usage: Usage | None
    waited: float  # seconds spent awaiting the upstream's body
    first_byte_at: float | None  # perf_counter() when a stream's first bytes went out
    body: bytes | None = None  # everything the client got, when asked to keep it (the cache)


def response_headers(
    upstream: Answer,
    request_id: str,
    route: str,
    extra: Mapping[str, str] | None = None,
) -> CIMultiDict[str]:
    """The upstream's headers minus hop-by-hop ones, plus the gateway's own."""
    headers = CIMultiDict(upstream.headers)
    upstream_id = headers.get("x-request-id")
    for name in _RESPONSE_DROP:
        if name in headers:
            del headers[name]
    if upstream_id:
        headers["x-upstream-request-id"] = upstream_id
    headers["x-request-id"] = request_id
    headers["x-mini-llm-route"] = route
    if extra:
        headers.update(extra)
    return headers


async def relay(
    request: web.Request,
    upstream: Answer,
    provider: str,
    request_id: str,
    route: str,
    translation: Translation | None = None,
    *,
    since: float,
    strip_usage: bool = False,
    keep: int | None = None,
    extra: Mapping[str, str] | None = None,
    cors_origin: str | None = None,
) -> Relayed:
    """Send the upstream's answer to the client as it arrives; the upstream is closed after.

    `since` is the perf_counter() the gateway's own time counts from (the request's start,
    moved on by the time already spent waiting on the upstream). `strip_usage`: the usage
    chunk of this OpenAI stream was asked for by the gateway, not by the client. `keep`: the
    largest answer to give back whole in `Relayed.body` (for the cache), None for none.
    """
    if translation is not None:
        return await _translated(
            request, upstream, provider, request_id, route, translation, since, extra, cors_origin
        )
    headers = response_headers(upstream, request_id, route, extra)
    event_stream = upstream.content_type == "text/event-stream"
    if event_stream:
        headers["Cache-Control"] = "no-cache"
        headers["X-Accel-Buffering"] = "no"
    length = upstream.content_length
    if not event_stream and length is not None and length <= WHOLE_ANSWER_MAX_BYTES:
        whole = await _whole(upstream, provider, headers)
        if keep is not None and whole.response.status == 200 and length <= keep:
            assert isinstance(whole.response, web.Response)
            return whole._replace(body=whole.response.body)  # type: ignore[arg-type]
        return whole
    scanner = _scanner(upstream, strip_usage)
    clock = time.perf_counter
    waited = 0.0
    first_byte_at: float | None = None
    headers[OVERHEAD_HEADER] = f"{(clock() - since) * 1000:.2f}"
    add_cors_headers(cors_origin, headers)  # sent before the front door sees it
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
    read = upstream.content.readany
    feed = scanner.feed if scanner is not None else None
    tail = b"\n\n"
    kept: list[bytes] | None = [] if keep is not None and upstream.status == 200 else None
    kept_size = 0
    try:
        await response.prepare(request)
        while True:
            asked = clock()
            try:
                chunk = await read()
            except BROKEN_OFF as exc:
                log_broken_off(provider, exc)
                if scanner is not None and (held := scanner.close()):
                    await response.write(held)
                    tail = held[-2:]
                await _end_broken(request, response, event_stream, tail)
                return Relayed(response, _usage(scanner), waited, first_byte_at)
            waited += clock() - asked
            if not chunk:
                break
            if feed is not None:
                chunk = feed(chunk)
                if not chunk:
                    continue
            await response.write(chunk)
            if first_byte_at is None:
                first_byte_at = clock()
            if event_stream:
                tail = chunk[-2:]
            if kept is not None:
                kept.append(chunk)
                kept_size += len(chunk)
                if keep is not None and kept_size > keep:
                    kept = None  # too large to keep
        if scanner is not None and (held := scanner.close()):
            await response.write(held)
            if kept is not None:
                kept.append(held)
        await response.write_eof()
        if kept is not None:
            return Relayed(response, _usage(scanner), waited, first_byte_at, b"".join(kept))
    except ConnectionResetError:
        log.debug("client went away during the response")
    except Exception:
        # Headers are out: the answer can only be ended, as one that broke off is.
        log.exception("internal error relaying the answer of %s", provider)
        await _end_broken(request, response, event_stream, tail)
    finally:
        upstream.close()
    return Relayed(response, _usage(scanner), waited, first_byte_at)


def _usage(scanner: UsageScanner | None) -> Usage | None:
    return scanner.usage if scanner is not None else None


def _scanner(upstream: Answer, strip: bool = False) -> UsageScanner | None:
    """What reads the usage of this answer, in the provider's own format."""
    encoding = upstream.headers.get("Content-Encoding")
    return scanner_for(upstream.status, upstream.content_type, encoding, strip)


async def _read_whole(upstream: Answer, provider: str) -> tuple[bytes, float]:
    """The whole body and the seconds spent waiting for it; 502 when it breaks off."""
    asked = time.perf_counter()
    try:
        body = await upstream.read()
    except BROKEN_OFF as exc:
        log_broken_off(provider, exc)
        raise ProxyError(
            502, "upstream_error", f"provider `{provider}` broke off its answer"
        ) from None
    finally:
        upstream.close()  # after a full read the connection is already back in the pool
    return body, time.perf_counter() - asked


async def _whole(upstream: Answer, provider: str, headers: CIMultiDict[str]) -> Relayed:
    """A small, complete answer goes out in one write: status, headers and body together."""
    body, waited = await _read_whole(upstream, provider)
    del headers["Content-Length"]
    response = web.Response(
        status=upstream.status, reason=upstream.reason, headers=headers, body=body
    )
    encoding = upstream.headers.get("Content-Encoding")
    usage = usage_in(body, upstream.status, upstream.content_type, encoding)
    return Relayed(response, usage, waited, None)


async def _translated(
    request: web.Request,
    upstream: Answer,
    provider: str,
    request_id: str,
    route: str,
    translation: Translation,
    since: float,
    extra: Mapping[str, str] | None = None,
    cors_origin: str | None = None,
) -> Relayed:
    """An answer in the provider's format, rewritten into the client's as it arrives."""
    headers = response_headers(upstream, request_id, route, extra)
    for name in RESPONSE_HEADERS_TO_DROP:
        headers.popall(name, None)
    if translation.dropped:
        headers[DROPPED_HEADER] = ", ".join(translation.dropped)
    if upstream.status < 400 and upstream.content_type == "text/event-stream":
        add_cors_headers(cors_origin, headers)  # sent before the front door sees it
        return await _translated_stream(request, upstream, provider, headers, translation, since)
    body, waited = await _read_whole(upstream, provider)
    encoding = upstream.headers.get("Content-Encoding")
    usage = usage_in(body, upstream.status, upstream.content_type, encoding)
    if upstream.status >= 400:
        body = translate_error(upstream.status, body, to=translation.client)
    else:
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise ProxyError(502, "upstream_error", f"provider `{provider}` answered no JSON")
        answer = translate_answer(doc, to=translation.client, client_model=translation.client_model)
        body = json.dumps(answer, ensure_ascii=False).encode()
    headers["Content-Type"] = content_type(False)
    response = web.Response(
        status=upstream.status, reason=upstream.reason, headers=headers, body=body
    )
    return Relayed(response, usage, waited, None)


async def _translated_stream(
    request: web.Request,
    upstream: Answer,
    provider: str,
    headers: CIMultiDict[str],
    translation: Translation,
    since: float,
) -> Relayed:
    headers["Content-Type"] = content_type(True)
    headers["Cache-Control"] = "no-cache"
    headers["X-Accel-Buffering"] = "no"
    stream = translation.stream()
    scanner = _scanner(upstream)  # the provider's events, before translation
    clock = time.perf_counter
    waited = 0.0
    first_byte_at: float | None = None
    headers[OVERHEAD_HEADER] = f"{(clock() - since) * 1000:.2f}"
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
    read = upstream.content.readany
    try:
        await response.prepare(request)
        while True:
            asked = clock()
            try:
                chunk = await read()
            except BROKEN_OFF as exc:
                log_broken_off(provider, exc)
                await response.write(stream.fail(_BROKE_OFF))
                break
            waited += clock() - asked
            if not chunk:
                await response.write(stream.close())
                break
            if scanner is not None:
                scanner.feed(chunk)
            out = stream.feed(chunk)
            if out:
                await response.write(out)
                if first_byte_at is None:
                    first_byte_at = clock()
        await response.write_eof()
    except ConnectionResetError:
        log.debug("client went away during the response")
    except Exception:
        log.exception("internal error relaying the translated answer of %s", provider)
        try:
            await response.write(stream.fail("the gateway failed while relaying the answer"))
            await response.write_eof()
        except Exception:  # the client may be gone too: nothing left to tell it
            log.debug("could not end the translated stream", exc_info=True)
    finally:
        upstream.close()
    return Relayed(response, _usage(scanner), waited, first_byte_at)


_BROKE_OFF = "the upstream stream broke off before it was complete"


async def _end_broken(
    request: web.Request, response: web.StreamResponse, event_stream: bool, tail: bytes
) -> None:
    if event_stream:
        # Close any half-written event first, so the error event parses on its own.
        prefix = b"" if tail.endswith(b"\n\n") else b"\n\n"
        message = "the upstream stream broke off before it was complete"
        await response.write(prefix + stream_error_event(request.path, message))
        await response.write_eof()
        return
    # A body that is not an event stream cannot carry an error: cut the connection so the
    # client sees a truncated answer instead of a clean, short one.
    response.force_close()
    if request.transport is not None:
        request.transport.abort()


def log_broken_off(provider: str, exc: BaseException) -> None:
    log.warning("upstream %s failed mid-response: %s: %s", provider, type(exc).__name__, exc)
