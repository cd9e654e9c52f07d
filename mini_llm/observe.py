"""Watch every request go by: metrics, the access line, x-mini-llm-overhead-ms; serve /metrics.

One middleware, outermost, so requests refused by other middlewares are seen too. The
routed handler leaves what served the request in the request (`SERVED`); everything else
is measured here. Requests outside /v1/ (/health, /metrics, the playground) cost one dict
lookup unless the access log is on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from typing import TYPE_CHECKING

from aiohttp import web

from .accesslog import log_request
from .intake import request_id_of
from .metrics import Metrics, api_label
from .proxy import STARTED, Served
from .relay import OVERHEAD_HEADER

if TYPE_CHECKING:
    from aiohttp.typedefs import Middleware

    from .app import State

METRICS = web.AppKey("metrics", Metrics)
SERVED = web.RequestKey("mini_llm.served", Served)  # left by the routed handler
# The classic text format: what every Prometheus version reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
CLIENT_CLOSED = 499  # nginx's status for a client that left before its answer

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def install(app: web.Application, state: State) -> Metrics:
    """Metrics and the access log for an app whose routing table lives in `state`."""
    metrics = Metrics(lambda: state.snapshot)
    app[METRICS] = metrics
    app.middlewares.insert(0, _observing(metrics, state))
    app.router.add_get("/metrics", _scrape(metrics))
    if metrics.shared:

        async def publishing(app: web.Application) -> AsyncIterator[None]:
            task = asyncio.create_task(metrics.keep_publishing())
            yield
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

        app.cleanup_ctx.append(publishing)
    return metrics


def _scrape(metrics: Metrics) -> Handler:
    async def scrape(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=metrics.exposition(),
            headers={"Content-Type": CONTENT_TYPE, "x-request-id": request_id_of(request)},
        )

    return scrape


def _observing(metrics: Metrics, state: State) -> Middleware:
    clock = time.perf_counter
    in_flight = metrics.in_flight

    def done(
        request: web.Request,
        api: str | None,
        status: int,
        duration: float,
        first_byte: float | None,
        served: Served | None,
        cancelled: bool = False,
    ) -> None:
        if api is not None:
            metrics.observe(api, status, duration, first_byte, served, state.current.table)
        server = state.config.server
        if server.log_requests:
            request_id = request_id_of(request)
            log_request(
                request,
                request_id,
                status,
                duration,
                first_byte,
                served,
                cancelled,
                server.log_format,
            )

    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = clock()
        api = api_label(request.path)
        if api is None and not state.config.server.log_requests:
            return await handler(request)
        request[STARTED] = started
        if api is not None:
            in_flight.inc()
        try:
            response = await handler(request)
        except asyncio.CancelledError:
            done(request, api, CLIENT_CLOSED, clock() - started, None, None, cancelled=True)
            raise
        except web.HTTPException as exc:
            duration = clock() - started
            done(request, api, exc.status, duration, duration, None)
            raise
        except Exception:
            duration = clock() - started
            done(request, api, 500, duration, duration, None)
            raise
        finally:
            if api is not None:
                in_flight.dec()
        served: Served | None = request.get(SERVED)
        duration = clock() - started
        first_byte = duration  # a whole answer goes out as the handler returns it
        if served is not None:
            if not response.prepared:
                # (A stream has its own, set by relay before its headers went out.)
                overhead = max(duration - served.waited, 0.0)
                response.headers[OVERHEAD_HEADER] = f"{overhead * 1000:.2f}"
            elif served.first_byte_at is not None:
                first_byte = served.first_byte_at - started
        done(request, api, response.status, duration, first_byte, served)
        return response

    return observe
