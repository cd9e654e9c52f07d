"""Relay an upstream answer to the client: status and headers at once, then every chunk.

The last layer of forwarding (see proxy.py). Readers of what passes through (token usage,
stream translation, time to first byte) hook in at `relay`'s read loop, never by buffering.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Protocol

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

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

log = logging.getLogger("mini_llm")


class Body(Protocol):
    async def readany(self) -> bytes: ...


class Answer(Protocol):
    """What relay reads of an answer: aiohttp's ClientResponse, or a builtin provider's."""

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


def response_headers(upstream: Answer, request_id: str, route: str) -> CIMultiDict[str]:
    """The upstream's headers minus hop-by-hop ones, plus the gateway's own."""
    headers = CIMultiDict[str]()
    for name, value in upstream.headers.items():
        if name.lower() not in _RESPONSE_DROP:
            headers.add(name, value)
    upstream_id = upstream.headers.get("x-request-id")
    if upstream_id:
        headers["x-upstream-request-id"] = upstream_id
    headers["x-request-id"] = request_id
    headers["x-mini-llm-route"] = route
    return headers


async def relay(
    request: web.Request,
    upstream: Answer,
    provider: str,
    request_id: str,
    route: str,
    translation: Translation | None = None,
) -> web.StreamResponse:
    """Send the upstream's answer to the client as it arrives; the upstream is closed after."""
    if translation is not None:
        return await _translated(request, upstream, provider, request_id, route, translation)
    headers = response_headers(upstream, request_id, route)
    event_stream = upstream.content_type == "text/event-stream"
    if event_stream:
        headers["Cache-Control"] = "no-cache"
        headers["X-Accel-Buffering"] = "no"
    length = upstream.content_length
    if not event_stream and length is not None and length <= WHOLE_ANSWER_MAX_BYTES:
        return await _whole(upstream, provider, headers)
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
    read = upstream.content.readany
    tail = b"\n\n"
    try:
        await response.prepare(request)
        while True:
            try:
                chunk = await read()
            except BROKEN_OFF as exc:
                log_broken_off(provider, exc)
                await _end_broken(request, response, event_stream, tail)
                return response
            if not chunk:
                break
            await response.write(chunk)
            if event_stream:
                tail = chunk[-2:]
        await response.write_eof()
    except ConnectionResetError:
        log.debug("client went away during the response")
    except Exception:
        # Headers are out: the answer can only be ended, as one that broke off is.
        log.exception("internal error relaying the answer of %s", provider)
        await _end_broken(request, response, event_stream, tail)
    finally:
        upstream.close()
    return response


async def _whole(upstream: Answer, provider: str, headers: CIMultiDict[str]) -> web.Response:
    """A small, complete answer goes out in one write: status, headers and body together."""
    try:
        body = await upstream.read()
    except BROKEN_OFF as exc:
        log_broken_off(provider, exc)
        raise ProxyError(
            502, "upstream_error", f"provider `{provider}` broke off its answer"
        ) from None
    finally:
        upstream.close()  # after a full read the connection is already back in the pool
    del headers["Content-Length"]
    return web.Response(status=upstream.status, reason=upstream.reason, headers=headers, body=body)


async def _translated(
    request: web.Request,
    upstream: Answer,
    provider: str,
    request_id: str,
    route: str,
    translation: Translation,
) -> web.StreamResponse:
    """An answer in the provider's format, rewritten into the client's as it arrives."""
    headers = response_headers(upstream, request_id, route)
    for name in RESPONSE_HEADERS_TO_DROP:
        headers.popall(name, None)
    if translation.dropped:
        headers[DROPPED_HEADER] = ", ".join(translation.dropped)
    if upstream.status < 400 and upstream.content_type == "text/event-stream":
        return await _translated_stream(request, upstream, provider, headers, translation)
    try:
        body = await upstream.read()
    except BROKEN_OFF as exc:
        log_broken_off(provider, exc)
        raise ProxyError(
            502, "upstream_error", f"provider `{provider}` broke off its answer"
        ) from None
    finally:
        upstream.close()
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
    return web.Response(status=upstream.status, reason=upstream.reason, headers=headers, body=body)


async def _translated_stream(
    request: web.Request,
    upstream: Answer,
    provider: str,
    headers: CIMultiDict[str],
    translation: Translation,
) -> web.StreamResponse:
    headers["Content-Type"] = content_type(True)
    headers["Cache-Control"] = "no-cache"
    headers["X-Accel-Buffering"] = "no"
    stream = translation.stream()
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
    read = upstream.content.readany
    try:
        await response.prepare(request)
        while True:
            try:
                chunk = await read()
            except BROKEN_OFF as exc:
                log_broken_off(provider, exc)
                await response.write(stream.fail(_BROKE_OFF))
                break
            if not chunk:
                await response.write(stream.close())
                break
            out = stream.feed(chunk)
            if out:
                await response.write(out)
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
    return response


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
