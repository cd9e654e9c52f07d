"""Gateway errors in the shape the client's SDK parses, and upstream failures mapped once."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from .http1 import BadAnswer, UpstreamUnreachable

if TYPE_CHECKING:
    from .keys import Outcome

log = logging.getLogger("mini_llm")

# OpenAI error `type` and Anthropic error `type` per status.
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    408: "timeout_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout_error",
}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    408: "timeout_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    502: "api_error",
    503: "api_error",
    504: "api_error",
}


class ProxyError(Exception):
    """An answer the gateway gives itself. The message is shown to the client: no secrets."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        retryable: bool = False,
        outcome: Outcome | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        # Whether a fallback chain may move on to its next target after this.
        self.retryable = retryable
        # What an upstream try came to when the failure is one (connect_error, timeout).
        self.outcome = outcome


def is_anthropic_path(path: str) -> bool:
    return path.startswith("/v1/messages")


def error_body(path: str, status: int, code: str, message: str) -> bytes:
    """The error document for a status, Anthropic-shaped on /v1/messages*, else OpenAI."""
    if is_anthropic_path(path):
        kind = _ANTHROPIC_TYPES.get(status, "api_error")
        doc: dict[str, object] = {"type": "error", "error": {"type": kind, "message": message}}
    else:
        kind = _OPENAI_TYPES.get(status, "server_error")
        doc = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return json.dumps(doc).encode()


def stream_error_event(path: str, message: str) -> bytes:
    """An SSE event that makes the client's SDK raise instead of seeing a clean end."""
    if is_anthropic_path(path):
        doc = {"type": "error", "error": {"type": "api_error", "message": message}}
        return b"event: error\ndata: " + json.dumps(doc).encode() + b"\n\n"
    error = {"message": message, "type": "server_error", "code": "upstream_stream_error"}
    return b"data: " + json.dumps({"error": error}).encode() + b"\n\n"


# How an upstream request fails before its answer.
UPSTREAM_FAILURES = (aiohttp.ClientError, OSError, asyncio.TimeoutError)


def upstream_failure(provider: str, exc: BaseException) -> ProxyError:
    """An aiohttp failure before the upstream's answer, as the 502 or 504 the client gets."""
    # The detail goes to the log; the client gets a message without internals.
    log.warning("upstream %s failed: %s: %s", provider, type(exc).__name__, exc)
    # Order matters: a connect timeout is both a timeout and a connection error.
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        message = f"provider `{provider}` did not accept a connection in time"
        return ProxyError(504, "upstream_timeout", message, retryable=True, outcome="timeout")
    if isinstance(exc, (aiohttp.ServerTimeoutError, asyncio.TimeoutError)):
        message = f"provider `{provider}` did not answer in time"
        return ProxyError(504, "upstream_timeout", message, outcome="timeout")
    if isinstance(exc, (UpstreamUnreachable, aiohttp.ClientConnectorError)):
        message = f"provider `{provider}` is unreachable"
        return ProxyError(
            502, "upstream_unreachable", message, retryable=True, outcome="connect_error"
        )
    if isinstance(exc, BadAnswer):
        message = f"provider `{provider}` answered with something that is not HTTP/1.1"
    else:
        message = f"provider `{provider}` closed the connection without an answer"
    return ProxyError(502, "upstream_error", message, retryable=True, outcome="connect_error")


def error_response(path: str, request_id: str, route: str, err: ProxyError) -> web.Response:
    headers = {"x-request-id": request_id, "x-mini-llm-route": route, **err.headers}
    return web.Response(
        status=err.status,
        body=error_body(path, err.status, err.code, err.message),
        content_type="application/json",
        headers=headers,
    )
