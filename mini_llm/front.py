"""The front door: middlewares every request passes before and after its handler.

`guard` answers what no handler should see: a foreign Host (DNS rebinding), a foreign
Origin, CORS preflights, a missing or wrong gateway key, more requests than
`max_concurrency`. `safety_net` turns what no handler answered (no route, an unexpected
error) into the client's error shape. The gateway key's name is left in the request under
CLIENT for handlers and the access log.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from .access import CORS_EXPOSED, Client, preflight_headers
from .errors import ProxyError, error_response
from .intake import request_id_of
from .pools import Snapshot

log = logging.getLogger("mini_llm")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CLIENT = "mini_llm.client"  # the request's Client, when gateway keys are on
_CORS_ORIGIN = "mini_llm.cors_origin"
# Served without a gateway key: the playground page and the liveness form of /health.
_OPEN_PATHS = frozenset({"/", "/health"})


class InFlight:
    """Requests being served now, against `max_concurrency`."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


def _refuse(request: web.Request, status: int, code: str, message: str) -> web.Response:
    err = ProxyError(status, code, message)
    return error_response(request.path, request_id_of(request), "-", err)


def make_guard(current: Callable[[], Snapshot], in_flight: InFlight) -> Middleware:
    """The guard middleware over the access rules of the table in service."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        snapshot = current()
        access = snapshot.access
        headers = request.headers
        host = headers.get("Host")
        # No Host at all is HTTP/1.0, which no browser sends.
        if (
            host is not None
            and not access.knows(host)
            and not access.host_allowed(host, _local_address(request))
        ):
            return _refuse(
                request, 403, "host_not_allowed", f"Host `{host}` is not served by this gateway"
            )
        origin = headers.get("Origin")
        if origin is not None:
            if not access.origin_allowed(origin, f"{request.scheme}://{host}"):
                return _refuse(
                    request,
                    403,
                    "origin_not_allowed",
                    f"origin `{origin}` may not call this gateway",
                )
            request[_CORS_ORIGIN] = origin
            if request.method == "OPTIONS" and "Access-Control-Request-Method" in headers:
                requested = headers.get("Access-Control-Request-Headers", "")
                return web.Response(status=204, headers=preflight_headers(origin, requested))
        elif request.method == "OPTIONS" and "Access-Control-Request-Method" in headers:
            return _refuse(request, 403, "origin_not_allowed", "a preflight needs an Origin")
        if access.keys_on:
            client = access.client(headers)
            if client is None:
                if request.path in _OPEN_PATHS and request.method == "GET":
                    if request.path == "/health":
                        return web.json_response({"status": "ok"})
                    return await handler(request)
                return _refuse(
                    request,
                    401,
                    "authentication_error",
                    "a gateway key is required: send it as `Authorization: Bearer KEY`, "
                    "`x-api-key: KEY` or `x-mini-llm-key: KEY`",
                )
            request[CLIENT] = client
        if in_flight.count >= snapshot.config.server.max_concurrency:
            response = _refuse(
                request, 503, "overloaded", "the gateway is serving as many requests as it may"
            )
            response.headers["Retry-After"] = "1"
            return response
        in_flight.count += 1
        try:
            return await handler(request)
        finally:
            in_flight.count -= 1

    return guard


def client_of(request: web.Request) -> Client | None:
    client = request.get(CLIENT)
    return client if isinstance(client, Client) else None


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: answers to an allowed cross-origin caller say so, errors too."""
    origin = request.get(_CORS_ORIGIN)
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSED
        response.headers.add("Vary", "Origin")


def _local_address(request: web.Request) -> str | None:
    transport = request.transport
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    return str(sockname[0]).lower() if sockname else None


@web.middleware
async def safety_net(request: web.Request, handler: Handler) -> web.StreamResponse:
    """No route is a 404, an unexpected error a 500 (logged with its traceback), both in the
    client's error shape; the process keeps serving."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status not in (404, 405):
            raise
        return _refuse(request, 404, "not_found", f"no route for {request.method} {request.path}")
    except Exception:
        request_id = request_id_of(request)
        log.exception(
            "internal error serving %s %s (id %s)", request.method, request.path, request_id
        )
        err = ProxyError(500, "internal_error", "the gateway failed to serve this request")
        return error_response(request.path, request_id, "-", err)
