"""What came in: the request id, the body within its limit, and the model it names."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .errors import ProxyError

MAX_MODEL_CHARS = 256
_REQUEST_ID = web.RequestKey("mini_llm.request_id", str)


class RequestIds:
    """Ids unique to this process and unlike any other's: a random prefix and a count."""

    __slots__ = ("_count", "_prefix")

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._count = itertools.count()

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._count):016x}"


def name_request(request: web.Request, new_id: Callable[[], str]) -> str:
    """Give the request its id: the client's x-request-id when usable, else a new one."""
    given = request.headers.get("x-request-id")
    if given is not None and 0 < len(given) <= 200 and given.isprintable():
        request_id = given
    else:
        request_id = new_id()
    request[_REQUEST_ID] = request_id
    return request_id


def request_id_of(request: web.Request) -> str:
    """The id the front door gave the request (x-request-id), the same for every caller."""
    known: str | None = request.get(_REQUEST_ID)
    return known if known is not None else name_request(request, _random_id)


def _random_id() -> str:
    return os.urandom(16).hex()


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
        doc = json.loads(body)
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
