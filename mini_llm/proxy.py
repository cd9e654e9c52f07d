"""Forward one request: read, resolve, try keys and targets, stream the answer back."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from .config import Retry
from .errors import ProxyError, error_body, map_upstream_errors, stream_error_event
from .keys import retry_after_seconds
from .masking import mask
from .pools import ProviderRuntime, Snapshot
from .routing import ModelNotFound, Route
from .upstream import HOP_BY_HOP

log = logging.getLogger("mini_llm")

MAX_MODEL_CHARS = 256
# Answers up to this size with a Content-Length are read whole and sent in one write.
WHOLE_ANSWER_MAX_BYTES = 64 * 1024
_RETRY_STATUSES = frozenset({500, 502, 503, 504})
_AUTH_STATUSES = frozenset({401, 402, 403})
_RESPONSE_DROP = HOP_BY_HOP | {"x-request-id"}
# How an upstream answer breaks off once its headers are in.
_BROKEN_OFF = (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, asyncio.TimeoutError)


@dataclass
class Exchange:
    """One client request as the proxy sees it."""

    request: web.Request
    request_id: str
    route_header: str = "-"
    key: str | None = None  # the last key tried, for the access log (masked there)


def request_id_of(request: web.Request) -> str:
    given = request.headers.get("x-request-id")
    if given and len(given) <= 200 and given.isprintable():
        return given
    return os.urandom(16).hex()  # as random as uuid4().hex, at a quarter of the cost


def error_response(path: str, request_id: str, route: str, err: ProxyError) -> web.Response:
    headers = {"x-request-id": request_id, "x-mini-llm-route": route, **err.headers}
    return web.Response(
        status=err.status,
        body=error_body(path, err.status, err.code, err.message),
        content_type="application/json",
        headers=headers,
    )


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body, refusing more than `limit` bytes before and while reading."""
    length = request.content_length
    if length is not None:
        if length > limit:
            raise _too_large(limit)
        return await request.content.read()
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > limit:
            raise _too_large(limit)
    return bytes(body)


def _too_large(limit: int) -> ProxyError:
    return ProxyError(
        413, "request_too_large", f"request body is larger than the limit of {limit} bytes"
    )


def model_of(body: bytes) -> tuple[str, dict[str, Any]]:
    """The request's model name and its parsed document; 400 when either is unusable."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ProxyError(400, "invalid_json", "request body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise ProxyError(400, "invalid_json", "request body must be a JSON object")
    model = doc.get("model")
    if model is None:
        raise ProxyError(400, "missing_model", "request body has no `model`")
    if not isinstance(model, str):
        raise ProxyError(400, "invalid_model", "`model` must be a string")
    if not model:
        raise ProxyError(400, "invalid_model", "`model` must not be empty")
    if len(model) > MAX_MODEL_CHARS:
        raise ProxyError(
            400, "invalid_model", f"`model` must be at most {MAX_MODEL_CHARS} characters"
        )
    return model, doc


class Forwarder:
    """Sends one routed request upstream, with the retry and fallback rules of SPEC §8."""

    def __init__(
        self, exchange: Exchange, snapshot: Snapshot, body: bytes, doc: dict[str, Any], route: Route
    ) -> None:
        self.exchange = exchange
        self.snapshot = snapshot
        self.body = body
        self.doc = doc
        self.route = route

    def body_for(self, model: str) -> bytes:
        if model == self.route.model:
            return self.body  # the client's bytes, untouched
        spliced = splice_model(self.body, self.route.model, model)
        if spliced is not None:
            return spliced
        doc = dict(self.doc)
        doc["model"] = model
        return json.dumps(doc, ensure_ascii=False).encode()

    async def forward(self) -> web.StreamResponse:
        last_error: ProxyError | None = None
        for position, target in enumerate(self.route.targets):
            self.exchange.route_header = str(target)
            more = position + 1 < len(self.route.targets)
            runtime = self.snapshot.runtimes.get(target.provider)
            provider = self.snapshot.table.providers[target.provider]
            if runtime is None or not provider.enabled:
                last_error = ProxyError(
                    503,
                    "provider_disabled",
                    f"{provider.disabled_reason}; requests routed to it cannot be served",
                    retryable=True,
                )
                continue
            try:
                return await self._try_target(runtime, target.model, final=not more)
            except ProxyError as err:
                if not (err.retryable and more):
                    raise
                last_error = err
        assert last_error is not None
        raise last_error

    async def _try_target(
        self, runtime: ProviderRuntime, model: str, *, final: bool
    ) -> web.StreamResponse:
        # Counted while in use, so a pool retired by a reload closes only after we finish.
        runtime.connections.active += 1
        try:
            return await self._tries(runtime, model, final=final)
        finally:
            runtime.connections.release()

    async def _tries(
        self, runtime: ProviderRuntime, model: str, *, final: bool
    ) -> web.StreamResponse:
        provider = runtime.provider
        retry = provider.retry
        body = self.body_for(model)
        request = self.exchange.request
        tail = request.rel_url.raw_path[3:]  # after "/v1", still percent-encoded
        query = request.rel_url.raw_query_string
        pauses = _pauses(retry)
        tries_left = retry.attempts + 1
        last: aiohttp.ClientResponse | None = None
        try:
            while True:
                key = runtime.keys.acquire() if provider.auth.needs_key else None
                self.exchange.key = key
                if provider.auth.needs_key and key is None:
                    if last is not None and final:
                        return await self._stream(runtime, last)  # the upstream's own answer
                    if last is not None:
                        last.close()
                    raise self._all_resting(runtime)
                if last is not None:
                    last.close()
                    last = None
                tries_left -= 1
                try:
                    with map_upstream_errors(provider.name):
                        response = await runtime.connections.session.request(
                            request.method,
                            runtime.upstream.url(tail, query, key),
                            data=body,
                            headers=runtime.upstream.headers(request.headers.items(), key),
                            timeout=runtime.timeout,
                            allow_redirects=False,
                        )
                except ProxyError as err:
                    if not err.retryable or tries_left <= 0:
                        raise
                    await asyncio.sleep(next(pauses))
                    continue
                status = response.status
                if not _retryable(runtime, key, response):
                    return await self._stream(runtime, response)
                if tries_left <= 0:
                    if final:
                        return await self._stream(runtime, response)
                    response.close()
                    raise ProxyError(
                        status,
                        "upstream_failed",
                        f"provider `{provider.name}` answered {status}",
                        retryable=True,
                    )
                last = response
                if status in _RETRY_STATUSES:  # a resting key is retried at once, with the next
                    await asyncio.sleep(next(pauses))
        finally:
            if last is not None:  # a failed answer we did not stream (e.g. cancelled)
                last.close()

    def _all_resting(self, runtime: ProviderRuntime) -> ProxyError:
        wait = max(1, math.ceil(runtime.keys.seconds_until_available()))
        return ProxyError(
            429,
            "all_keys_resting",
            f"every key of provider `{runtime.provider.name}` is resting after upstream "
            f"failures; retry in {wait} s",
            headers={"Retry-After": str(wait)},
            retryable=True,
        )

    async def _stream(
        self, runtime: ProviderRuntime, upstream: aiohttp.ClientResponse
    ) -> web.StreamResponse:
        """Send status and headers at once, then every chunk as it arrives."""
        headers = CIMultiDict[str]()
        for name, value in upstream.headers.items():
            if name.lower() not in _RESPONSE_DROP:
                headers.add(name, value)
        upstream_id = upstream.headers.get("x-request-id")
        if upstream_id:
            headers["x-upstream-request-id"] = upstream_id
        headers["x-request-id"] = self.exchange.request_id
        headers["x-mini-llm-route"] = self.exchange.route_header
        event_stream = upstream.content_type == "text/event-stream"
        if event_stream:
            headers["Cache-Control"] = "no-cache"
            headers["X-Accel-Buffering"] = "no"
        length = upstream.content_length
        if not event_stream and length is not None and length <= WHOLE_ANSWER_MAX_BYTES:
            return await self._whole(runtime, upstream, headers)
        response = web.StreamResponse(
            status=upstream.status, reason=upstream.reason, headers=headers
        )
        read = upstream.content.readany
        tail = b"\n\n"
        try:
            await response.prepare(self.exchange.request)
            while True:
                try:
                    chunk = await read()
                except _BROKEN_OFF as exc:
                    _log_broken_off(runtime, exc)
                    await self._end_broken(response, event_stream, tail)
                    return response
                if not chunk:
                    break
                await response.write(chunk)
                if event_stream:
                    tail = chunk[-2:]
            await response.write_eof()
        except ConnectionResetError:
            log.debug("client went away during the response")
        finally:
            upstream.close()
        return response

    async def _whole(
        self, runtime: ProviderRuntime, upstream: aiohttp.ClientResponse, headers: CIMultiDict[str]
    ) -> web.Response:
        """A small, complete answer goes out in one write: status, headers and body together."""
        try:
            body = await upstream.read()
        except _BROKEN_OFF as exc:
            _log_broken_off(runtime, exc)
            raise ProxyError(
                502, "upstream_error", f"provider `{runtime.provider.name}` broke off its answer"
            ) from None
        finally:
            upstream.close()  # after a full read the connection is already back in the pool
        del headers["Content-Length"]
        return web.Response(
            status=upstream.status, reason=upstream.reason, headers=headers, body=body
        )

    async def _end_broken(
        self, response: web.StreamResponse, event_stream: bool, tail: bytes
    ) -> None:
        request = self.exchange.request
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


_MODEL_KEY = b'"model"'
_JSON_SPACE = b" \t\r\n"


def _json_string(value: str) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


def splice_model(body: bytes, old: str, new: str) -> bytes | None:
    """The client's body with only the model's value replaced, or None when unsure.

    Sure means: `"model"` occurs once (so it is the top-level key, spelt without escapes, as
    no `\\u` is anywhere) and is followed by `:` and exactly the JSON string of `old`.
    Anything else falls back to re-encoding the parsed document.
    """
    at = body.find(_MODEL_KEY)
    if at < 0 or body.find(_MODEL_KEY, at + 1) >= 0 or b"\\u" in body:
        return None
    pos = at + len(_MODEL_KEY)
    end = len(body)
    while pos < end and body[pos] in _JSON_SPACE:
        pos += 1
    if pos >= end or body[pos] != ord(":"):
        return None
    pos += 1
    while pos < end and body[pos] in _JSON_SPACE:
        pos += 1
    old_json = _json_string(old)
    if not body.startswith(old_json, pos):
        return None
    return body[:pos] + _json_string(new) + body[pos + len(old_json) :]


def _retryable(runtime: ProviderRuntime, key: str | None, response: aiohttp.ClientResponse) -> bool:
    """Whether an upstream status calls for another try (SPEC §8); rests the key if it must."""
    status = response.status
    if status != 429 and status not in _AUTH_STATUSES:
        return status in _RETRY_STATUSES
    if key is None:
        return False  # no key of ours to rest or rotate (auth none or passthrough)
    cooldown = runtime.provider.cooldown
    if status == 429:
        wait = retry_after_seconds(response.headers)
        runtime.keys.rest(key, cooldown.rate_limited_s if wait is None else wait)
    else:
        log.warning(
            "provider %s rejected key %s with %d; resting it for %g s",
            runtime.provider.name,
            mask(key),
            status,
            cooldown.auth_failed_s,
        )
        runtime.keys.rest(key, cooldown.auth_failed_s)
    return True


def _log_broken_off(runtime: ProviderRuntime, exc: BaseException) -> None:
    log.warning(
        "upstream %s failed mid-response: %s: %s",
        runtime.provider.name,
        type(exc).__name__,
        exc,
    )


def _pauses(retry: Retry) -> Iterator[float]:
    """Pauses before retries: from backoff_s, doubling, ±20% jitter, at most max_backoff_s."""
    pause = retry.backoff_s
    while True:
        yield min(pause * random.uniform(0.8, 1.2), retry.max_backoff_s)
        pause *= 2


async def handle(
    request: web.Request, snapshot: Snapshot, max_body: int, exchange: Exchange
) -> web.StreamResponse:
    """Serve one routed POST on the table it started with."""
    path = request.path
    try:
        body = await read_body(request, max_body)
        model, doc = model_of(body)
        try:
            route = snapshot.table.resolve(model)
        except ModelNotFound as exc:
            raise ProxyError(404, "model_not_found", str(exc)) from None
        return await Forwarder(exchange, snapshot, body, doc, route).forward()
    except ProxyError as err:
        return error_response(path, exchange.request_id, exchange.route_header, err)
