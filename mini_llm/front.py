"""The front door: what every request passes before and after its endpoint.

`Front.wrap` composes each endpoint once, when the app is built (no middleware chain to
walk per request). Around the endpoint it names the request (x-request-id), refuses what
no endpoint should see — a foreign Host (DNS rebinding), a foreign Origin, a missing or
wrong gateway key, more requests than `max_concurrency` — and answers CORS preflights;
after it, it turns an unexpected error into a 500 in the client's error shape, and hands
what happened to the observer (metrics, the access line, x-mini-llm-overhead-ms).
Requests refused here are observed too. The gateway key's name is left in the request
under CLIENT for endpoints and the access log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from .access import CORS_EXPOSED, Access, Client, preflight_headers
from .errors import ProxyError, error_response
from .intake import RequestIds, name_request, request_id_of
from .metrics import api_label
from .proxy import STARTED

if TYPE_CHECKING:
    from .observe import Observer
    from .pools import Snapshot

log = logging.getLogger("mini_llm")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# The request's Client, or None when gateway keys are off.
CLIENT: web.RequestKey[Client | None] = web.RequestKey("mini_llm.client")
_CORS_ORIGIN = web.RequestKey("mini_llm.cors_origin", str)
# Served without a gateway key: the playground page and the liveness form of /health.
_OPEN_PATHS = frozenset({"/", "/health"})


class Front:
    """Wraps endpoints in the access rules of the table in service, and observes them."""

    __slots__ = ("_current", "_ids", "_observer", "busy")

    def __init__(self, current: Callable[[], Snapshot], observer: Observer) -> None:
        self._current = current
        self._observer = observer
        self._ids = RequestIds()
        self.busy = 0  # requests being served now, against max_concurrency

    def wrap(self, endpoint: Handler) -> Handler:
        current = self._current
        observer = self._observer
        new_id = self._ids
        clock = time.perf_counter
        front = self

        async def serve(request: web.Request) -> web.StreamResponse:
            started = clock()
            request[STARTED] = started
            request_id = name_request(request, new_id)
            snapshot = current()
            api = api_label(request.path)
            refused = _refusal(request, snapshot.access)
            if refused is None and front.busy >= snapshot.config.server.max_concurrency:
                refused = _overloaded(request)
            if refused is not None:
                if api is not None or observer.logging:
                    duration = clock() - started
                    observer.done(request, request_id, api, refused.status, duration, duration)
                return refused
            front.busy += 1
            if api is not None:
                observer.in_flight += 1
            try:
                response = await endpoint(request)
            except asyncio.CancelledError:
                if api is not None or observer.logging:
                    observer.left(request, request_id, api, clock() - started)
                raise
            except web.HTTPException as exc:  # aiohttp answers it; it is still observed
                if api is not None or observer.logging:
                    duration = clock() - started
                    observer.done(request, request_id, api, exc.status, duration, duration)
                raise
            except Exception:
                log.exception(
                    "internal error serving %s %s (id %s)", request.method, request.path, request_id
                )
                err = ProxyError(500, "internal_error", "the gateway failed to serve this request")
                response = error_response(request.path, request_id, "-", err)
            finally:
                front.busy -= 1
                if api is not None:
                    observer.in_flight -= 1
            if api is not None or observer.logging:
                observer.answered(request, request_id, api, response, started)
            return response

        return serve


async def not_found(request: web.Request) -> web.StreamResponse:
    """The endpoint of every path and method no other serves."""
    return _refuse(request, 404, "not_found", f"no route for {request.method} {request.path}")


def _refuse(request: web.Request, status: int, code: str, message: str) -> web.Response:
    err = ProxyError(status, code, message)
    return error_response(request.path, request_id_of(request), "-", err)


def _overloaded(request: web.Request) -> web.Response:
    message = "the gateway is serving as many requests as it may"
    response = _refuse(request, 503, "overloaded", message)
    response.headers["Retry-After"] = "1"
    return response


def _refusal(request: web.Request, access: Access) -> web.StreamResponse | None:
    """The answer to a request the access rules stop (or a preflight); None lets it in."""
    headers = request.headers
    host = headers.get("Host")
    # No Host at all is HTTP/1.0, which no browser sends.
    if (
        host is not None
        and not access.knows(host)
        and not access.host_allowed(host, _local_address(request))
    ):
        message = f"Host `{host}` is not served by this gateway"
        return _refuse(request, 403, "host_not_allowed", message)
    origin = headers.get("Origin")
    if origin is not None:
        if not access.origin_allowed(origin, f"{request.scheme}://{host}"):
            message = f"origin `{origin}` may not call this gateway"
            return _refuse(request, 403, "origin_not_allowed", message)
        request[_CORS_ORIGIN] = origin
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in headers:
            requested = headers.get("Access-Control-Request-Headers", "")
            return web.Response(status=204, headers=preflight_headers(origin, requested))
    elif request.method == "OPTIONS" and "Access-Control-Request-Method" in headers:
        return _refuse(request, 403, "origin_not_allowed", "a preflight needs an Origin")
    if not access.keys_on:
        request[CLIENT] = None
        return None
    client = access.client(headers)
    request[CLIENT] = client
    if client is None and not (request.path in _OPEN_PATHS and request.method == "GET"):
        return _refuse(
            request,
            401,
            "authentication_error",
            "a gateway key is required: send it as `Authorization: Bearer KEY`, "
            "`x-api-key: KEY` or `x-mini-llm-key: KEY`",
        )
    if client is None and request.path == "/health":
        return web.json_response({"status": "ok"})  # liveness only, without a key
    return None


def client_of(request: web.Request) -> Client | None:
    """The gateway key's client; None without gateway keys or before the front door."""
    return request.get(CLIENT)


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: answers to an allowed cross-origin caller say so, errors too."""
    if "Origin" not in request.headers:
        return
    origin = request.get(_CORS_ORIGIN)
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSED
        response.headers.add("Vary", "Origin")


def _local_address(request: web.Request) -> str | None:
    transport = request.transport
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    return str(sockname[0]).lower() if sockname else None
