"""The front door: what every request passes before and after its endpoint.

`Front.wrap` composes each endpoint once, when the app is built (no middleware chain to
walk per request). Around the endpoint it names the request (x-request-id), refuses what
no endpoint should see — a foreign Host (DNS rebinding), a foreign Origin, a missing or
wrong gateway key, more requests than `max_concurrency` — and answers CORS preflights;
after it, it turns an unexpected error into a 500 in the client's error shape, and hands
what happened to the observer (metrics, the access line, x-mini-llm-overhead-ms).
Requests refused here are observed too. Endpoints get the request as `Incoming`: its
id, its routing table, the gateway key's client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web

from .access import Access, add_cors_headers, preflight_headers
from .errors import ProxyError, error_response
from .intake import Endpoint, Handler, Incoming, RequestIds
from .metrics import api_label

if TYPE_CHECKING:
    from .observe import Observer
    from .pools import Snapshot

log = logging.getLogger("mini_llm")

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

    def wrap(self, endpoint: Endpoint) -> Handler:
        """The aiohttp handler of an endpoint."""
        current = self._current
        observer = self._observer
        new_id = self._ids
        clock = time.perf_counter
        front = self

        async def serve(request: web.Request) -> web.StreamResponse:
            started = clock()
            snapshot = current()
            incoming = Incoming(request, new_id(request), snapshot, started)
            api = api_label(request.path)
            observed = api is not None or snapshot.config.server.log_requests
            refused = _refusal(incoming, snapshot.access)
            if refused is None and front.busy >= snapshot.config.server.max_concurrency:
                refused = _overloaded(incoming)
            if refused is not None:
                add_cors_headers(incoming.cors_origin, refused.headers)
                if observed:
                    observer.refused(incoming, api, refused)
                return refused
            front.busy += 1
            if api is not None:
                observer.in_flight += 1
            try:
                response = await endpoint(incoming)
            except asyncio.CancelledError:
                if observed:
                    observer.left(incoming, api)
                raise
            except web.HTTPException as exc:  # aiohttp answers it; it is still observed
                if observed:
                    observer.refused(incoming, api, exc)
                raise
            except Exception:
                log.exception(
                    "internal error serving %s %s (id %s)",
                    request.method,
                    request.path,
                    incoming.request_id,
                )
                err = ProxyError(500, "internal_error", "the gateway failed to serve this request")
                response = error_response(request.path, incoming.request_id, "-", err)
            finally:
                front.busy -= 1
                if api is not None:
                    observer.in_flight -= 1
            if not response.prepared:  # (a stream's headers said so as they went out)
                add_cors_headers(incoming.cors_origin, response.headers)
            if observed:
                observer.answered(incoming, api, response)
            return response

        return serve


async def not_found(incoming: Incoming) -> web.StreamResponse:
    """The endpoint of every path and method no other serves."""
    request = incoming.request
    return _refuse(incoming, 404, "not_found", f"no route for {request.method} {request.path}")


def _refuse(incoming: Incoming, status: int, code: str, message: str) -> web.Response:
    err = ProxyError(status, code, message)
    return error_response(incoming.request.path, incoming.request_id, "-", err)


def _overloaded(incoming: Incoming) -> web.Response:
    message = "the gateway is serving as many requests as it may"
    response = _refuse(incoming, 503, "overloaded", message)
    response.headers["Retry-After"] = "1"
    return response


def _refusal(incoming: Incoming, access: Access) -> web.Response | None:
    """The answer to a request the access rules stop (or a preflight); None lets it in."""
    request = incoming.request
    headers = request.headers
    host = headers.get("Host")
    # No Host at all is HTTP/1.0, which no browser sends.
    if (
        host is not None
        and not access.knows(host)
        and not access.host_allowed(host, _local_address(request))
    ):
        message = f"Host `{host}` is not served by this gateway"
        return _refuse(incoming, 403, "host_not_allowed", message)
    origin = headers.get("Origin")
    if origin is not None:
        if not access.origin_allowed(origin, f"{request.scheme}://{host}"):
            message = f"origin `{origin}` may not call this gateway"
            return _refuse(incoming, 403, "origin_not_allowed", message)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in headers:
            requested = headers.get("Access-Control-Request-Headers", "")
            return web.Response(status=204, headers=preflight_headers(origin, requested))
        incoming.cors_origin = origin
    elif request.method == "OPTIONS" and "Access-Control-Request-Method" in headers:
        return _refuse(incoming, 403, "origin_not_allowed", "a preflight needs an Origin")
    if not access.keys_on:
        return None
    client = incoming.client = access.client(headers)
    if client is None and not (request.path in _OPEN_PATHS and request.method == "GET"):
        return _refuse(
            incoming,
            401,
            "authentication_error",
            "a gateway key is required: send it as `Authorization: Bearer KEY`, "
            "`x-api-key: KEY` or `x-mini-llm-key: KEY`",
        )
    if client is None and request.path == "/health":
        return web.json_response({"status": "ok"})  # liveness only, without a key
    return None


def _local_address(request: web.Request) -> str | None:
    transport = request.transport
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    return str(sockname[0]).lower() if sockname else None
