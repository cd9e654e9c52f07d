"""What came in: the request and its id, the body within its limit, and the model it names."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .errors import ProxyError

if TYPE_CHECKING:
    from .access import Client
    from .pools import Snapshot
    from .proxy import Served

MAX_MODEL_CHARS = 256


class Incoming:
    """A request as the front door let it in: what every endpoint is given.

    `snapshot` is the routing table the request is served by, whatever reloads happen
    meanwhile; `client` the gateway key's client (None when gateway keys are off, or for
    an open path without one); `served` what answered it, left by the routed endpoint.
    """

    __slots__ = ("client", "cors_origin", "request", "request_id", "served", "snapshot", "started")

    def __init__(
        self, request: web.Request, request_id: str, snapshot: Snapshot, started: float
    ) -> None:
        self.request = request
        self.request_id = request_id
        self.snapshot = snapshot
        self.started = started  # perf_counter() at arrival
        self.client: Client | None = None
        self.cors_origin: str | None = None  # an allowed Origin: answers say so
        self.served: Served | None = None


# An aiohttp handler, and an endpoint behind the front door (front.py wraps one into the other).
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Endpoint = Callable[[Incoming], Awaitable[web.StreamResponse]]


class RequestIds:
    """Ids unique to this process and unlike any other's: a random prefix and a count."""

    __slots__ = ("_count", "_prefix")

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._count = itertools.count()

    def __call__(self, request: web.Request) -> str:
        """The client's x-request-id when usable, else a new one."""
        given = request.headers.get("x-request-id")
        if given is not None and 0 < len(given) <= 200 and given.isprintable():
            return given
        return f"{self._prefix}{next(self._count):016x}"


async def read_body(request: web.Request, limit: int, timeout: float) -> bytes:
    """The request body within `limit` bytes and `timeout` seconds (413, 408)."""
    if request.content.is_eof():  # all here with the headers: no timer needed
        return await _read_body(request, limit)
    try:
        return await asyncio.wait_for(_read_body(request, limit), timeout)
    except asyncio.TimeoutError:
        raise ProxyError(
            408, "request_timeout", f"the request body did not arrive within {timeout:g} s"
        ) from None


async def _read_body(request: web.Request, limit: int) -> bytes:
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
        # `{` then no NUL is UTF-8 to json's own guess (json.detect_encoding): decoded here,
        # the guess is skipped, with the same result.
        utf8 = body[:1] == b"{" and body[1:2] != b"\x00"
        doc = json.loads(body.decode("utf-8", "surrogatepass") if utf8 else body)
    except (ValueError, UnicodeDecodeError):
        raise ProxyError(400, "invalid_json", "request body is not valid JSON") from None
    except RecursionError:
        raise ProxyError(400, "invalid_json", "request body is nested too deeply") from None
    if not isinstance(doc, dict):
        raise ProxyError(400, "invalid_json", "request body must be a JSON object")
    model = doc.get("model")
    if model is None:
        raise ProxyError(400, "missing_model", "request body has no `model`")
    if not isinstance(model, str):
        raise ProxyError(400, "invalid_model", "`model` must be a string")
    check_model(model)
    return model, doc


def check_model(model: str) -> None:
    """A model name we can route and show: 1-256 characters, none of them control ones."""
    if not model:
        raise ProxyError(400, "invalid_model", "`model` must not be empty")
    if len(model) > MAX_MODEL_CHARS:
        raise ProxyError(
            400, "invalid_model", f"`model` must be at most {MAX_MODEL_CHARS} characters"
        )
    if not model.isprintable():
        raise ProxyError(400, "invalid_model", "`model` must not contain control characters")
